from scheduler.commands import program

program()

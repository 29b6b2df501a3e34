from scheduler.commands import main

raise SystemExit(main())

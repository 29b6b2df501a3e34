"""The worker's entry point: `python jobs.py` is the same as `tayori run`.

Which job runs when is declared in scheduler/worker.py (APScheduler, in memory).
"""

import sys

from scheduler.commands import main

if __name__ == "__main__":
    raise SystemExit(main(["run", *sys.argv[1:]]))

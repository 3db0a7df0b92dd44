"""The `edgecompress` command: each command parses its arguments, calls one flow or function, and prints.

- app.py       the typer app, shared options, one-line failures
- run.py       run, retrain, serve, stage
- registry.py  promote, rollback, lineage, history, diff, checkout, reproduce
- sweep.py     sweep
- edgetpu.py   check-edgetpu
- tables.py    every table the commands print
"""

import faulthandler
import signal

from flows.cli import edgetpu, registry, run, sweep
from flows.cli.app import app

__all__ = ["app", "edgetpu", "main", "registry", "run", "sweep"]


def main() -> None:
    """Entry point of the `edgecompress` script."""
    from tasks.bookkeeping.scratch import own_tmp

    # `kill -USR1 PID` prints every thread's stack to stderr: what a command that seems stuck is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    own_tmp()  # every temporary file of the command in one folder, removed however the command ends
    app()


if __name__ == "__main__":
    main()

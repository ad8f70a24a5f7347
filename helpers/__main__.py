import time

_started = (time.time(), time.process_time())  # for the CLI's stage log: our code starts here

from .cli import main  # noqa: E402

raise SystemExit(main(started=_started))

"""`python -m kern_tasks.lean_beat`: kern_tasks' beat without the `celery` command line.

`celery -A kern_tasks beat` works, but the `celery` command loads every installed
package's command plugins before it starts (flower's brings tornado and prometheus'
client; the `shell` command brings prompt_toolkit and its REPL): some 40 MiB that a beat
never uses, on every replica. This runs the same beat, `celery.apps.beat.Beat` of
`kern_tasks.celery.app` (what `celery beat` runs after parsing its options), so the
process holds only beat's own imports. Options: --max-interval (seconds, as `celery
beat --max-interval`), -l/--loglevel.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kern_tasks.lean_beat", description=__doc__.split("\n")[0])
    parser.add_argument("--max-interval", type=float, default=None, help="longest sleep between ticks, seconds")
    parser.add_argument("-l", "--loglevel", default="INFO")
    args = parser.parse_args(argv)
    from kern_tasks.celery import app

    app.Beat(max_interval=args.max_interval, loglevel=args.loglevel).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

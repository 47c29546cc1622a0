"""`python -m beat`: the beat process type without the `celery` command line (the Procfile's).

`celery -A beat beat` runs the same beat, but the `celery` command loads every installed
package's command plugins before it starts (flower's brings tornado and prometheus_client;
the `shell` command brings its REPL): some 16 MiB that a beat never uses, on every replica.
This runs `celery.apps.beat.Beat` of `beat.app`, what `celery beat` runs once it has parsed
its options, so the process holds beat's own imports only. Options: -l/--loglevel and
--max-interval (the longest sleep between ticks, seconds), as `celery beat` spells them;
everything else is the app's settings (KERN_BEAT_BATCH, KERN_BEAT_SWEEP_INTERVAL, ...).
"""

from __future__ import annotations

import argparse
import sys

from kombu.log import LOG_LEVELS

from beat import app

# The level names Celery's own -l accepts (celery.utils.log.mlevel reads this table).
LEVELS = [name for name in LOG_LEVELS if isinstance(name, str) and name != "NOTSET"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m beat", description="kern_tasks' beat (the Procfile's beat)")
    parser.add_argument("--max-interval", type=float, default=None, help="longest sleep between ticks, seconds")
    parser.add_argument("-l", "--loglevel", default="INFO", type=str.upper, choices=LEVELS, help="default INFO")
    args = parser.parse_args(argv)
    app.Beat(max_interval=args.max_interval, loglevel=args.loglevel).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

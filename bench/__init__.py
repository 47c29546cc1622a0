"""Benchmarks of kern_tasks against real Postgres, Redis, Celery and a loopback HTTP target.

Run them all with `python -m bench.run [--quick]`; see bench/README.md for what each one
measures, the baseline it is compared with in the same run, and the latest results.
"""

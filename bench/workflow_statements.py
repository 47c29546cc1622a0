"""What a durable workflow step costs the database, counted: SQL statements, commits and
the CPU of this process per step, for benchmark 5's workflows (bench/workflow_app.py) run
in this one process by the real task bodies (`advance_task`, `step_task`) on Postgres,
every published message handed straight to the next task body instead of to a broker.

    python -m bench.workflow_statements [rounds]

A statement is one `before_cursor_execute` of the workers' engine (an executemany is
one); a commit one `commit` event. The run's start (submit) and its end (agno's record,
`record_end`) are counted apart from the steps: the per-step figures are the steps'.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event

from bench.common import POSTGRES_URL, REDIS_URL, fresh_schema, log


def _counting(engine: Any) -> Counter:
    counts: Counter = Counter()

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        counts["statements"] += 1
        counts["sql:" + " ".join(statement.split())[:90]] += 1

    @event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        counts["commits"] += 1

    return counts


def measure(rounds: int = 5) -> dict[str, Any]:
    from kern_tasks.app import create_app
    from kern_tasks.dispatch import TASK_WORKFLOW_ADVANCE, TASK_WORKFLOW_STEP
    from kern_tasks.runtime import bind_runtime
    from kern_tasks.settings import Settings
    from kern_tasks.workflow import submit as submit_module, tasks
    from kern_tasks.workflow.submit import start, wait

    from bench.workflow_app import PARALLEL_BRANCHES, SEQUENCE_STEPS, parallel, sequence

    out: dict[str, Any] = {}
    with fresh_schema("benchsql") as schema:
        settings = Settings(database_url=POSTGRES_URL, db_schema=schema.name, broker_url=REDIS_URL)
        app = create_app(settings)
        bind_runtime(app, settings, schema.db, workflows={w.id: w for w in (sequence, parallel)})
        me = SimpleNamespace(app=app)
        inbox: list[Any] = []
        tasks.publish_messages = lambda _app, messages: inbox.extend(messages)  # type: ignore[assignment]
        submit_module.publish_messages = tasks.publish_messages  # type: ignore[assignment]
        counts = _counting(schema.db.engine)
        bodies = {TASK_WORKFLOW_ADVANCE: tasks.advance_task, TASK_WORKFLOW_STEP: tasks.step_task}
        ends = tasks.record_end

        def drive(workflow: Any, n: int) -> dict[str, float]:
            run = start(app, workflow, "go", db=schema.db)
            counts.clear()
            cpu0, t0 = time.process_time(), time.perf_counter()
            steps_seen = 0
            ended_counts: Counter = Counter()

            def counted_end(*args: Any, **kwargs: Any) -> bool:
                before = counts.copy()
                try:
                    return ends(*args, **kwargs)
                finally:
                    ended_counts.update(counts - before)

            tasks.record_end = counted_end  # type: ignore[assignment]
            while inbox:
                message = inbox.pop(0)
                steps_seen += message.task == TASK_WORKFLOW_STEP
                bodies[message.task](me, *message.args)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
            tasks.record_end = ends  # type: ignore[assignment]
            if wait(schema.db, run.run_id, timeout=5).status.value != "COMPLETED":
                raise RuntimeError("the benchmark run did not complete")
            assert steps_seen == n, (steps_seen, n)
            step_counts = counts - ended_counts
            return {"statements": step_counts["statements"] / n, "commits": step_counts["commits"] / n,
                    "cpu_ms": cpu * 1000 / n, "wall_ms": wall * 1000 / n,
                    "end_statements": ended_counts["statements"], "end_commits": ended_counts["commits"],
                    "detail": {k[4:]: v / n for k, v in step_counts.items() if k.startswith("sql:")}}

        for name, workflow, n in (("sequence", sequence, SEQUENCE_STEPS), ("parallel", parallel, PARALLEL_BRANCHES)):
            drive(workflow, n)  # warm: imports, statement caches, connections
            results = [drive(workflow, n) for _ in range(rounds)]
            out[name] = {key: round(statistics.median(r[key] for r in results), 2)
                         for key in ("statements", "commits", "cpu_ms", "wall_ms", "end_statements", "end_commits")}
            out[name]["detail"] = results[-1]["detail"]
            log(f"{name}: {out[name]['statements']} statements, {out[name]['commits']} commits, "
                f"{out[name]['cpu_ms']} ms CPU, {out[name]['wall_ms']} ms wall per step (median of {rounds}); "
                f"the run's end {out[name]['end_statements']} statements, {out[name]['end_commits']} commits")
    return out


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    for name, figures in result.items():
        print(name)
        for sql, count in sorted(figures["detail"].items(), key=lambda kv: -kv[1]):
            print(f"  {count:6.2f}  {sql}")

"""Runs of agents, teams and workflows, kept where agno keeps them (agno_sessions, agno_runs,
agno_traces, agno_spans). Used by the AgentOS app and by anything else that runs a
component (the workflow executors on Celery)."""

from kern_tasks.runs.store import RunResult, RunStore, StoredRun

__all__ = ["RunResult", "RunStore", "StoredRun"]

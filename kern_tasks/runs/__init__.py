"""Runs of agents, teams and workflows, kept where agno keeps them (agno_sessions, agno_runs,
agno_traces, agno_spans). The AgentOS app records its runs through RunStore (os/runner.py),
written as agno writes them, so agno and kern_tasks read each other's runs."""

from kern_tasks.runs.store import RunResult, RunStore, StoredRun

__all__ = ["RunResult", "RunStore", "StoredRun"]

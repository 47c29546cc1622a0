"""AgentOS: the HTTP app serving agents, workflows and the schedules API."""

from kern_tasks.os.app import AgentOS

__all__ = ["AgentOS"]

"""An AgentOS configured by nothing but its environment (KERN_*), as a deployment runs
one: `python -m uvicorn tests.startup_app:app`. Start-up tests serve it on databases
without our tables. It logs at INFO, so the line a migration writes can be counted."""

import logging

from kern_tasks.agent import Agent
from kern_tasks.os import AgentOS

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

agent_os = AgentOS(agents=[Agent(model="offline", name="Echo", id="echo")])
app = agent_os.get_app()

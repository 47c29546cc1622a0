"""The seed's code samples run as written (with `kern` spelled `kern_tasks`), and the
public import paths of docs/architecture.md exist."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from kern_tasks.settings import Settings


def test_public_import_paths() -> None:
    from kern_tasks.agent import Agent
    from kern_tasks.db import Database
    from kern_tasks.os import AgentOS
    from kern_tasks.scheduler import ScheduleManager
    from kern_tasks.tools.scheduler import SchedulerTools

    assert all(callable(x) for x in (Agent, Database, AgentOS, ScheduleManager, SchedulerTools))


def test_seed_startup_pattern_runs_as_written(tmp_path: Path) -> None:
    from kern_tasks.agent import Agent
    from kern_tasks.db import Database
    from kern_tasks.os import AgentOS
    from kern_tasks.scheduler import ScheduleManager
    from kern_tasks.tools.scheduler import SchedulerTools

    db = Database(settings=Settings(data_dir=tmp_path))
    agent = Agent(
        model="openai:gpt-5.4",
        tools=[
            SchedulerTools(
                db=db,
                default_endpoint="/agents/my-agent/runs",
                default_method="POST",
                default_timezone="UTC",
            ),
        ],
    )

    @asynccontextmanager
    async def lifespan(app):
        manager = ScheduleManager(db=db)
        manager.create(
            name="daily_digest",
            cron="0 9 * * 1-5",  # weekdays 9am
            endpoint="/workflows/daily-digest/runs",
            if_exists="update",  # idempotent on restart
        )
        yield

    agent_os = AgentOS(agents=[agent], db=db, scheduler=True, scheduler_poll_interval=15, lifespan=lifespan)
    app = agent_os.get_app()

    async def start_twice() -> None:
        for _ in range(2):  # a restart: the create is idempotent
            async with app.router.lifespan_context(app):
                pass

    asyncio.run(start_twice())
    schedules = ScheduleManager(db).list()
    assert [s.name for s in schedules] == ["daily_digest"]
    assert schedules[0].cron_expr == "0 9 * * 1-5"


def test_the_package_exports_what_users_call() -> None:
    import kern_tasks
    from kern_tasks.agent import Agent
    from kern_tasks.db import Database
    from kern_tasks.os import AgentOS
    from kern_tasks.scheduler import ScheduleManager
    from kern_tasks.tools.scheduler import SchedulerTools

    expected = {"Agent": Agent, "AgentOS": AgentOS, "Database": Database, "ScheduleManager": ScheduleManager,
                "SchedulerTools": SchedulerTools, "Settings": Settings}
    assert set(kern_tasks.__all__) == {"__version__", *expected}
    for name, obj in expected.items():
        assert getattr(kern_tasks, name) is obj
    from celery import Celery
    from celery.app.utils import find_app

    # `celery -A kern_tasks` finds the app in kern_tasks.celery (kern_tasks.app is a module).
    assert isinstance(find_app("kern_tasks"), Celery)


def test_settings_keep_secrets_out_of_their_repr() -> None:
    settings = Settings.from_env({
        "KERN_SERVICE_TOKEN": "svc-s3cret", "KERN_SECURITY_KEY": "key-s3cret", "OPENAI_API_KEY": "sk-s3cret",
        "KERN_DATABASE_URL": "postgresql://u:pw-s3cret@db/app", "KERN_BROKER_URL": "redis://:rd-s3cret@r:6379/0",
    })  # fmt: skip
    assert settings.service_token == "svc-s3cret" and settings.database_url.endswith("@db/app")
    assert "s3cret" not in repr(settings)

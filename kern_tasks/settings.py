"""The one place that reads the environment.

Every other module takes a `Settings` (or the values it needs) as an argument, so tests
and embedding applications can configure kern_tasks without touching `os.environ`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from kern_tasks.errors import ValidationError

DEFAULT_DATA_DIR = Path(".kern")


def _default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'kern.db'}"


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _flag(name: str, value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ValidationError(name, f"must be one of 1/0, true/false, yes/no, on/off; got {value!r}")


def _whole(name: str, value: str | None, must: str, high: int | None = None) -> int | None:
    """A whole number from 1 (to `high`); `must` says what is wanted when it is not one."""
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if number < 1 or (high is not None and number > high):
        raise ValidationError(name, f"{must}; got {value!r}")
    return number


def _positive_int(name: str, value: str | None) -> int | None:
    return _whole(name, value, "must be a whole number >= 1")


LOG_FORMATS = ("text", "json")
# Celery's worker pools (celery worker -P); threads suit fires, which wait on HTTP.
WORKER_POOLS = ("threads", "prefork", "solo", "gevent", "eventlet")


def _choice(name: str, value: str | None, choices: tuple[str, ...]) -> str:
    if value is None:
        return choices[0]
    if value.strip().lower() not in choices:
        raise ValidationError(name, f"must be one of {', '.join(choices)}; got {value!r}")
    return value.strip().lower()


def _names(name: str, value: str | None) -> tuple[str, ...]:
    """A comma-separated list of queue names ("reports, default"); empty: none."""
    if value is None:
        return ()
    names = tuple(part.strip() for part in value.split(","))
    if not all(names) or any(" " in n for n in names):
        raise ValidationError(name, f'must be queue names separated by commas, such as "celery,reports"; got {value!r}')
    return names


def _positive(name: str, value: str | None, unit: str, examples: str) -> float | None:
    """A number above 0 (and finite) of `unit`, such as `examples`; None when unset."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number < float("inf"):
        raise ValidationError(name, f"must be a number of {unit} above 0, such as {examples}; got {value!r}")
    return number




@dataclass(frozen=True)
class Settings:
    """Runtime configuration; `Settings.from_env()` builds it from `KERN_*` variables.

    database_url     KERN_DATABASE_URL   default: a SQLite file in KERN_DATA_DIR (.kern/)
    db_schema        KERN_DB_SCHEMA      Postgres schema of the agno_* tables (agno uses "ai")
    auto_upgrade     KERN_AUTO_UPGRADE   default on: a process starting on a database without our
                                         tables (or behind) migrates it; off ("0", "false"): it stops
                                         at start and asks for `kern-tasks db upgrade`
    db_pool_size     KERN_DB_POOL_SIZE   connections each process keeps open; default: fitted to what
                                         the process runs at once (a worker: its tasks in flight, from
                                         its pool and concurrency, plus its heartbeat; kern_tasks.runtime)
    broker_url       KERN_BROKER_URL     default: an embedded SQL transport in KERN_DATA_DIR
    result_backend   KERN_RESULT_BACKEND default: none
    base_url         KERN_BASE_URL       where schedules fire: base_url + endpoint
    service_token    KERN_SERVICE_TOKEN  bearer token fires carry
    security_key     KERN_SECURITY_KEY   when set, every API route needs it (or a JWT, below)
    jwt_verification_key
                     KERN_JWT_VERIFICATION_KEY  verifies users' JWTs (agno's JWT_VERIFICATION_KEY): a
                                         PEM public key, or the shared secret for HS256 (never in repr)
    jwt_jwks_file    KERN_JWT_JWKS_FILE  a JWKS file of verification keys, by kid (agno's JWT_JWKS_FILE)
    jwt_algorithm    KERN_JWT_ALGORITHM  default RS256 (agno's default); HS256 for a shared secret
    os_id            KERN_OS_ID          this OS's id: GET /config's os_id and the audience JWTs must name
                                         (default: the AgentOS title)
    app              KERN_APP            "module:attribute" of the AgentOS workers import
    openai_api_key   OPENAI_API_KEY      bearer key of the OpenAI-compatible model adapter (never in repr)
    openai_base_url  OPENAI_BASE_URL     default https://api.openai.com/v1 (Ollama, vLLM: their /v1 URL)
    run_retention_days
                     KERN_RUN_RETENTION_DAYS  default unset: keep every run; a number of days (> 0, "30",
                                         "0.5"): beat prunes finished runs older than that, with the
                                         sessions, runs and traces they created (scheduler/retention.py)
    log_format       KERN_LOG_FORMAT     "text" (default) or "json": one JSON object per line from web,
                                         beat and worker (kern_tasks/logs.py)
    metrics_port     KERN_METRICS_PORT   when set, `celery beat` and `celery worker` serve Prometheus metrics
                                         on this port (/metrics, no auth: a private network; prefork
                                         children summed). Web serves /metrics on its own port always
    metrics_token    KERN_METRICS_TOKEN  a bearer token good for GET /metrics only (Prometheus'
                                         `authorization` credentials), when auth is on (never in repr)
    alert_webhook    KERN_ALERT_WEBHOOK  a URL that gets one JSON POST per alert incident opened (and one
                                         when it resolves): overdue slots, failure streaks, no beat
                                         (never in repr: webhook URLs carry their secret)
    worker_pool      KERN_WORKER_POOL    the `workers` process type's Celery pool: threads (default: fires
                                         wait on HTTP), prefork, solo, gevent, eventlet (kern_tasks/process_apps.py)
    worker_concurrency
                     KERN_WORKER_CONCURRENCY  tasks each `workers` process runs at once (default 32)
    worker_queues    KERN_WORKER_QUEUES  queues a `workers` process consumes, comma-separated (default:
                                         the default queue only; a schedule's `queue` routes its fires)
    beat_batch       KERN_BEAT_BATCH     schedules the `beat` process type claims per transaction (default 500)
    beat_sweep_interval
                     KERN_BEAT_SWEEP_INTERVAL  seconds between beat's sweeps and heartbeats (default 1)
    """

    # Secrets (and URLs that may carry passwords) stay out of repr: Celery and Flower
    # print configuration, and a repr ends up in logs.
    database_url: str | None = field(default=None, repr=False)
    db_schema: str | None = None
    auto_upgrade: bool = True
    db_pool_size: int | None = None
    broker_url: str | None = field(default=None, repr=False)
    result_backend: str | None = field(default=None, repr=False)
    base_url: str = "http://127.0.0.1:7777"
    service_token: str | None = field(default=None, repr=False)
    security_key: str | None = field(default=None, repr=False)
    jwt_verification_key: str | None = field(default=None, repr=False)
    jwt_jwks_file: str | None = None
    jwt_algorithm: str = "RS256"
    os_id: str | None = None
    app: str | None = None
    data_dir: Path = field(default=DEFAULT_DATA_DIR)
    openai_api_key: str | None = field(default=None, repr=False)
    openai_base_url: str = "https://api.openai.com/v1"
    run_retention_days: float | None = None
    log_format: str = "text"
    metrics_port: int | None = None
    metrics_token: str | None = field(default=None, repr=False)
    alert_webhook: str | None = field(default=None, repr=False)
    worker_pool: str = "threads"
    worker_concurrency: int = 32
    worker_queues: tuple[str, ...] = ()
    beat_batch: int = 500
    beat_sweep_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.run_retention_days is not None and not self.run_retention_days > 0:
            raise ValidationError("run_retention_days", f"must be above 0; got {self.run_retention_days}")
        for name, choices in (("log_format", LOG_FORMATS), ("worker_pool", WORKER_POOLS)):
            if getattr(self, name) not in choices:
                raise ValidationError(name, f"must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        for name in ("worker_concurrency", "beat_batch"):
            if getattr(self, name) < 1:
                raise ValidationError(name, f"must be a whole number >= 1; got {getattr(self, name)!r}")
        if not self.beat_sweep_interval > 0:
            raise ValidationError("beat_sweep_interval", f"must be above 0; got {self.beat_sweep_interval!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value else None

        return cls(
            database_url=get("KERN_DATABASE_URL"),
            db_schema=get("KERN_DB_SCHEMA"),
            auto_upgrade=_flag("KERN_AUTO_UPGRADE", get("KERN_AUTO_UPGRADE"), default=True),
            db_pool_size=_positive_int("KERN_DB_POOL_SIZE", get("KERN_DB_POOL_SIZE")),
            broker_url=get("KERN_BROKER_URL"),
            result_backend=get("KERN_RESULT_BACKEND"),
            base_url=get("KERN_BASE_URL") or cls.base_url,
            service_token=get("KERN_SERVICE_TOKEN"),
            security_key=get("KERN_SECURITY_KEY"),
            jwt_verification_key=get("KERN_JWT_VERIFICATION_KEY"),
            jwt_jwks_file=get("KERN_JWT_JWKS_FILE"),
            jwt_algorithm=get("KERN_JWT_ALGORITHM") or cls.jwt_algorithm,
            os_id=get("KERN_OS_ID"),
            app=get("KERN_APP"),
            data_dir=Path(get("KERN_DATA_DIR") or DEFAULT_DATA_DIR),
            openai_api_key=get("OPENAI_API_KEY"),
            openai_base_url=get("OPENAI_BASE_URL") or cls.openai_base_url,
            run_retention_days=_positive("KERN_RUN_RETENTION_DAYS", get("KERN_RUN_RETENTION_DAYS"), "days",
                                         '"30" or "0.5"'),
            log_format=_choice("KERN_LOG_FORMAT", get("KERN_LOG_FORMAT"), LOG_FORMATS),
            metrics_port=_whole("KERN_METRICS_PORT", get("KERN_METRICS_PORT"), "must be a TCP port, 1-65535", 65535),
            metrics_token=get("KERN_METRICS_TOKEN"),
            alert_webhook=get("KERN_ALERT_WEBHOOK"),
            worker_pool=_choice("KERN_WORKER_POOL", get("KERN_WORKER_POOL"), WORKER_POOLS),
            worker_concurrency=_positive_int("KERN_WORKER_CONCURRENCY", get("KERN_WORKER_CONCURRENCY"))
            or cls.worker_concurrency,
            worker_queues=_names("KERN_WORKER_QUEUES", get("KERN_WORKER_QUEUES")),
            beat_batch=_positive_int("KERN_BEAT_BATCH", get("KERN_BEAT_BATCH")) or cls.beat_batch,
            beat_sweep_interval=_positive("KERN_BEAT_SWEEP_INTERVAL", get("KERN_BEAT_SWEEP_INTERVAL"), "seconds",
                                          '"1" or "0.5"')
            or cls.beat_sweep_interval,
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or _default_database_url(self.data_dir)

    @property
    def jwt_enabled(self) -> bool:
        """True when users' JWTs are accepted (a verification key or a JWKS file is set)."""
        return bool(self.jwt_verification_key or self.jwt_jwks_file)

    @property
    def is_embedded(self) -> bool:
        """True when the database is the default SQLite file (no services needed)."""
        return self.database_url is None

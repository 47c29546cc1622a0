"""The broker transports kern_tasks uses: kombu's, each with one change (RabbitMQ, amqp://,
runs on kombu's py-amqp transport unchanged; what it needs is app configuration:
kern_tasks.app queue_max_priority and the prefetch setting next to it).

Redis (`TRANSPORT`): kombu's, with one teardown fix. When a worker loses Redis while
late-acknowledged messages are in flight (every kern.fire is acks_late), celery 5.7 / kombu 5.7 tear the connection down twice: the
first close of the channel fails on the dead socket, the transport is then detached,
and the second close tries to restore the unacked messages through a fresh Redis
client built from the detached transport's settings, which raises
`AttributeError: 'NoneType' object has no attribute 'hostname'`. That is not a
connection error, so celery treats it as unrecoverable and the worker exits instead of
reconnecting.

Here a channel whose connection is gone raises a connection error instead, which every
teardown path ignores as it should. Nothing is lost: the messages stay in Redis's
unacked index (restored after the visibility timeout), and beat's sweep re-publishes
attempts still queued after kern_republish_after in any case.

The embedded default's SQL transport (`SQL_TRANSPORT`, sqla+sqlite://): kombu's polls
the message table once a second when it is empty, so each hop of a workflow (step, then
advance, then the next step) waited up to a second; it polls every SQL_POLL_S here. (Its
transport options go to create_engine, so the interval cannot be passed as an option.)
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:  # the kombu Connection closed under us
            raise RedisConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


TRANSPORT = f"{__name__}:Transport"

SQL_POLL_S = 0.1
SQL_TRANSPORT = f"{__name__}:SqlTransport"


def __getattr__(name: str) -> Any:
    # SqlTransport is made when kombu first asks for it (the embedded default): a process on
    # Redis never imports kombu's SQL transport and the SQLAlchemy ORM it brings (~6 MiB).
    if name == "SqlTransport":
        from kombu.transport import sqlalchemy as kombu_sql

        transport = type("SqlTransport", (kombu_sql.Transport,), {"polling_interval": SQL_POLL_S, "__module__": __name__})
        globals()[name] = transport
        return transport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

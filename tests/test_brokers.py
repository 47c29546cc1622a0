"""What differs between the brokers, on a real RabbitMQ (a vhost of this test's own): the
app's AMQP settings, priorities (queues declared with x-max-priority, the highest served
first), and beat's backlog read (a passive queue_declare), as kern_tasks publishes them.
The HA and outage tests (tests/test_beat_ha.py, tests/test_outages.py) run on both brokers."""

from __future__ import annotations

import subprocess
from pathlib import Path

from kombu import Connection

from kern_tasks.app import create_app
from kern_tasks.beat import LeaseScheduler
from kern_tasks.dispatch import Dispatch, Route, publish
from kern_tasks.settings import Settings
from tests.rabbitmq import rabbit_vhost


def test_amqp_and_redis_settings_differ_only_where_the_broker_does(tmp_path: Path) -> None:
    redis = create_app(Settings(broker_url="redis://127.0.0.1:6379/0", data_dir=tmp_path)).conf
    amqp = create_app(Settings(broker_url="amqp://guest:guest@127.0.0.1:5672//", data_dir=tmp_path)).conf
    assert (redis.task_queue_max_priority, amqp.task_queue_max_priority) == (None, 9)
    assert redis.broker_transport_options == {"visibility_timeout": 3600} and amqp.broker_transport_options == {}
    assert redis.broker_transport == "kern_tasks.broker:Transport" and amqp.broker_transport is None
    assert redis.worker_enable_prefetch_count_reduction and not amqp.worker_enable_prefetch_count_reduction


def test_rabbitmq_serves_the_highest_priority_first_and_beat_reads_the_backlog(tmp_path: Path) -> None:
    with rabbit_vhost() as url:
        vhost = url.rsplit("/", 1)[1]
        app = create_app(Settings(broker_url=url, data_dir=tmp_path))
        publish(app, [Dispatch(f"attempt-{p}", route=Route(queue="ranked", priority=p)) for p in (0, 9, 4, 6)])
        publish(app, [Dispatch("attempt-none", route=Route(queue="ranked"))])

        listed = subprocess.run(["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "arguments"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "ranked" in listed and "x-max-priority" in listed and "9" in listed, listed

        # Beat's backlog check (a passive queue_declare) counts what waits in the queue.
        scheduler = LeaseScheduler(app, lazy=True)
        assert scheduler.broker_backlog({"ranked"}) == 5
        assert scheduler.broker_backlog({"nobody-declared-this"}) == 0

        order = []
        with Connection(url) as connection:
            channel = connection.default_channel
            while (message := channel.basic_get("ranked", no_ack=True)) is not None:
                order.append(message.headers["id"])
        # Highest first; no priority is 0 on RabbitMQ (on Redis 0 is served first).
        assert order[:3] == ["attempt-9", "attempt-6", "attempt-4"], order
        assert set(order[3:]) == {"attempt-0", "attempt-none"}, order

"""Local notices (app/localbus.py) and the SQLite broker transport they wake
(app/broker.py): between real processes, through real UNIX sockets."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kombu import Connection, Queue

from app import broker, localbus

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def bus(tmp_path: Path):
    bus = localbus.Bus(localbus.folder_for(tmp_path))
    yield bus
    bus.close()


def publish_later(folder: Path, topic: str, delay: float) -> threading.Thread:
    """Another Bus object (as another process would have) publishes after ``delay``."""

    def run() -> None:
        time.sleep(delay)
        localbus.Bus(folder).publish(topic)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_notice_wakes_the_subscriber_of_its_topic_only(bus: localbus.Bus) -> None:
    job = bus.subscribe("job:1")
    other = bus.subscribe("job:2")
    assert job is not None and other is not None
    publish_later(bus.folder, "job:1", 0.2)
    started = time.monotonic()
    assert job.wait(60)
    assert time.monotonic() - started < 30  # the notice, not the timeout
    assert not other.wait(0.2)
    assert not job.wait(0.1)  # each notice is seen once


def test_a_notice_sent_before_waiting_is_not_lost(bus: localbus.Bus) -> None:
    """Subscribe, read the state, then wait: a change in between still wakes."""
    subscription = bus.subscribe("job:1")
    assert subscription is not None
    localbus.Bus(bus.folder).publish("job:1")
    assert subscription.wait(30)


def test_notices_cross_processes(bus: localbus.Bus) -> None:
    subscription = bus.subscribe("broker")
    assert subscription is not None
    code = f"from app import localbus; localbus.get({str(bus.folder)!r}).publish('broker')"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
    assert subscription.wait(30)


def test_sockets_of_dead_processes_are_removed_and_ours_on_close(bus: localbus.Bus) -> None:
    assert bus.subscribe("x") is not None
    ours = set(os.listdir(bus.folder))
    assert len(ours) == 1
    # A process killed with SIGKILL leaves its socket file behind.
    code = (
        "import os, socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM);"
        f" s.bind(os.path.join({str(bus.folder)!r}, f'{{os.getpid()}}-deadbeef.sock'));"
        " os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], timeout=60)
    assert len(os.listdir(bus.folder)) == 2
    localbus.Bus(bus.folder).publish("x")
    assert set(os.listdir(bus.folder)) == ours
    bus.close()
    assert os.listdir(bus.folder) == []


def test_topics_nobody_waits_on_are_forgotten(bus: localbus.Bus) -> None:
    subscription = bus.subscribe("job:1")
    assert subscription is not None
    localbus.Bus(bus.folder).publish("job:1")
    localbus.Bus(bus.folder).publish("job:unwatched")
    assert subscription.wait(30)
    subscription.close()
    assert bus._counts == {} and bus._subscribers == {}


def test_a_long_data_dir_gets_a_private_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    folder = localbus.folder_for(deep)
    assert folder.parent == Path(localbus.tempfile.gettempdir())
    assert folder == localbus.folder_for(deep)  # every process agrees
    assert folder != localbus.folder_for(tmp_path / ("d" * 60) / ("f" * 60))
    bus = localbus.Bus(folder)
    try:
        assert bus.subscribe("x") is not None
        assert (folder.stat().st_mode & 0o777) == 0o700
    finally:
        bus.close()
        folder.rmdir()


def test_a_folder_anyone_can_write_is_refused(tmp_path: Path) -> None:
    """Then waiters poll: a notice folder others control could flood them."""
    folder = tmp_path / "notify"
    folder.mkdir()
    folder.chmod(0o777)
    bus = localbus.Bus(folder)
    assert bus.subscribe("x") is None
    assert not bus.listening
    bus.publish("x")  # still harmless


def test_a_forked_child_publishes_and_listens_on_its_own(bus: localbus.Bus) -> None:
    subscription = bus.subscribe("job:1")
    assert subscription is not None
    registered = localbus.get(bus.folder)
    assert registered.subscribe("warm") is not None  # the registry's bus listens too
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            child = localbus.get(bus.folder)
            ok = not child.listening and child.subscribe("job:2") is not None
            child.publish("job:1")
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert subscription.wait(30)
    registered.close()


# ------------------------------------------------------------------ the broker


def _connection(url: str, **options: object) -> Connection:
    broker.install()
    return Connection(url, transport_options=dict(options))


def test_the_sqlite_broker_wakes_a_waiting_consumer_at_once(tmp_path: Path) -> None:
    """The consumer would next poll in 120 s: only the notice sent with the
    message can deliver it before the drain's 60 s timeout."""
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    options = {
        "notify_dir": str(tmp_path / "notify"),
        "backstop_seconds": 120.0,
        "polling_interval": 120.0,
    }
    queue = Queue("jobs")
    received: list[object] = []
    with _connection(url, **options) as consumer, _connection(url, **options) as producer:
        assert isinstance(consumer.transport, broker.Transport)

        def on_message(body: object, message) -> None:
            received.append(body)
            message.ack()

        with consumer.Consumer(queue, callbacks=[on_message]):
            with pytest.raises(TimeoutError):  # empty: the first poll finds nothing
                consumer.drain_events(timeout=0.2)

            def send() -> None:
                time.sleep(0.3)
                producer.Producer().publish({"job": 1}, routing_key="jobs", declare=[queue])

            threading.Thread(target=send, daemon=True).start()
            started = time.monotonic()
            consumer.drain_events(timeout=60)
            assert time.monotonic() - started < 30
    assert received == [{"job": 1}]


def test_messages_from_a_plain_kombu_client_are_found_by_the_backstop(tmp_path: Path) -> None:
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    queue = Queue("jobs")
    received: list[object] = []
    with (
        _connection(url, notify_dir=str(tmp_path / "notify"), backstop_seconds=0.2) as consumer,
        _connection(url) as producer,  # no notify_dir: sends no notice
        consumer.Consumer(queue, callbacks=[lambda body, m: (received.append(body), m.ack())]),
    ):
        producer.Producer().publish({"job": 2}, routing_key="jobs", declare=[queue])
        consumer.drain_events(timeout=30)
    assert received == [{"job": 2}]


def test_an_acknowledged_message_frees_a_full_prefetch_at_once(tmp_path: Path) -> None:
    """A worker whose one prefetch slot is taken (acks_late: its running task)
    waits ``polling_interval`` between looks, here 120 s. The task's ack wakes
    it, so the message queued behind is delivered within the drain's timeout."""
    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"
    options = {
        "notify_dir": str(tmp_path / "notify"),
        "backstop_seconds": 120.0,
        "polling_interval": 120.0,
    }
    queue = Queue("jobs")
    held: list[object] = []
    received: list[object] = []
    with _connection(url, **options) as consumer, _connection(url, **options) as producer:
        for number in (1, 2):
            producer.Producer().publish({"job": number}, routing_key="jobs", declare=[queue])
        channel = consumer.default_channel
        channel.basic_qos(0, 1, False)  # one message at a time, as a worker with prefetch 1
        with consumer.Consumer(
            queue,
            channel=channel,
            callbacks=[lambda body, message: (received.append(body), held.append(message))],
        ):
            consumer.drain_events(timeout=30)
            assert received == [{"job": 1}]
            # The task ends in another thread (Celery's result handler) and acks.
            threading.Timer(0.5, lambda: held[0].ack()).start()
            started = time.monotonic()
            consumer.drain_events(timeout=60)
            assert time.monotonic() - started < 30  # not the end of a 60 s wait
    assert received == [{"job": 1}, {"job": 2}]

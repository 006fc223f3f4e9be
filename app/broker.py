"""The embedded default's broker: kombu's SQLAlchemy transport on SQLite, woken
by local notices instead of polling fast.

kombu's transport finds new messages by polling every queue, once a second by
default: a job waited half a second on average before a worker saw it, and
polling every 0.1 s cost an idle worker 6% of a core. Here every message sent
also sends a ``broker`` notice (``app/localbus.py``), and a worker with nothing
to do waits for that notice, polling only as a backstop. Pick-up takes
milliseconds and an idle worker polls once a second.

The tables and messages are kombu's own: a plain kombu client on the same
database still works with it (its messages are then seen at the next backstop
poll). ``sqla+`` URLs resolve to this transport once ``install()`` has run,
which ``celery_init_app`` does in the API and the worker alike.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import create_engine

from app import localbus

TOPIC = "broker"
# Transport options this module reads; kombu's SQLAlchemy transport hands the
# rest to create_engine.
NOTIFY_DIR_OPTION = "notify_dir"
BACKSTOP_SECONDS_OPTION = "backstop_seconds"
_KOMBU_OPTIONS = {
    "queue_tablename",
    "message_tablename",
    "callback",
    "errback",
    "max_retries",
    "interval_start",
    "interval_step",
    "interval_max",
    "retry_errors",
    "polling_interval",
    NOTIFY_DIR_OPTION,
    BACKSTOP_SECONDS_OPTION,
}


def _bus(transport_options: dict[str, Any]) -> localbus.Bus | None:
    folder = transport_options.get(NOTIFY_DIR_OPTION)
    return localbus.get(folder) if folder else None


class Channel(kombu_sqla.Channel):
    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items() if k not in _KOMBU_OPTIONS}
        return create_engine(conninfo.hostname, **options)

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]  # the signature of kombu_sqla.Channel._put, which this extends
        super()._put(queue, payload, **kwargs)
        # After the commit: a worker woken now finds the message.
        bus = _bus(self.connection.client.transport_options)
        if bus is not None:
            bus.publish(TOPIC)

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        # A task ended: the worker may take its next message now. Without
        # this, a worker whose prefetch was full looked again only after
        # ``polling_interval``, which every job waited on top of its work.
        bus = _bus(self.connection.client.transport_options)
        if bus is not None:
            bus.notify_here(TOPIC)


class Transport(kombu_sqla.Transport):
    Channel = Channel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options
        self.bus = _bus(options)
        self.backstop_seconds = float(options.get(BACKSTOP_SECONDS_OPTION) or 1.0)
        self._wake: localbus.Subscription | None = None

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:  # type: ignore[override]  # the signature of kombu.transport.virtual.Transport.drain_events
        """kombu's loop, with the sleep between empty polls replaced by waiting
        for a notice (``polling_interval`` still applies when this process
        cannot listen)."""
        if self._wake is None and self.bus is not None:
            self._wake = self.bus.subscribe(TOPIC)
        if self._wake is None:
            return super().drain_events(connection, timeout)
        started = monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)  # type: ignore[union-attr]  # virtual.Transport.__init__ sets it
                return None
            except kombu_sqla.Empty:
                elapsed = monotonic() - started
                if timeout is not None and elapsed >= timeout:
                    raise TimeoutError() from None
                if self._prefetch_full():
                    # Nothing may be taken until a running task is acknowledged,
                    # which sends no notice: look again soon (no query is made
                    # meanwhile, the channel refuses before asking the database).
                    pause = float(self.polling_interval or 0.1)
                else:
                    pause = self.backstop_seconds
                if timeout is not None:
                    pause = min(pause, timeout - elapsed)
                self._wake.wait(pause)

    def _prefetch_full(self) -> bool:
        consuming = [channel for channel in self.channels if channel._consumers]
        return bool(consuming) and not any(channel.qos.can_consume() for channel in consuming)

    def close_connection(self, connection: Any) -> None:
        if self._wake is not None:
            self._wake.close()
            self._wake = None
        super().close_connection(connection)


def install() -> None:
    """Make ``sqla+`` and ``sqlalchemy+`` broker URLs use this transport."""
    for alias in ("sqla", "sqlalchemy"):
        TRANSPORT_ALIASES[alias] = f"{__name__}:Transport"

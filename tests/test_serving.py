"""The API's gunicorn worker (app/serving.py) where a live server shows a fault
only by chance: two quit signals in the same instant."""

from __future__ import annotations

import os
import queue
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

from gunicorn.config import Config
from gunicorn.glogging import Logger

from app.serving import ApiWorker


def test_a_second_quit_signal_during_the_first_does_not_hang_the_worker() -> None:
    """Ctrl-C on ``make run`` sends the worker SIGINT and, through the arbiter,
    SIGQUIT. Python runs the second handler inside the first, wherever that is:
    here, where the first holds the thread pool's shutdown lock (it is putting
    the pool's wake-up item on its queue), which made the worker wait for the
    lock until the arbiter killed it."""
    cfg = Config()
    worker = ApiWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    pool = ThreadPoolExecutor(max_workers=1)
    worker.tpool = pool

    class SecondSignal(queue.SimpleQueue):
        def put(self, item: object, *args: object, **kwargs: object) -> None:
            if item is None and not arrived.is_set():
                arrived.set()
                worker.handle_quit(signal.SIGQUIT, None)
            super().put(item)

    arrived, exited = threading.Event(), threading.Event()
    pool._work_queue = SecondSignal()

    def quit_once() -> None:
        try:
            worker.handle_quit(signal.SIGINT, None)
        except SystemExit:
            exited.set()

    threading.Thread(target=quit_once, daemon=True).start()
    try:
        assert exited.wait(5), "the worker hung on the second quit signal"
        assert arrived.is_set()
    finally:
        worker.tmp.close()

"""Functions tests/test_isolated.py runs in app/isolated.py's child processes.

Kept apart, with nothing but the standard library imported, because each
child imports the module of the function it runs.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MB = 1 << 20


def add(a: int, b: int) -> int:
    return a + b


def crash() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def raise_value_error() -> None:
    raise ValueError("not a number: 'x'")


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * MB))


def sleep_forever(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(3600)


def spin() -> None:
    while True:
        pass


def my_pid() -> int:
    return os.getpid()


def imported(name: str) -> bool:
    import sys

    return name in sys.modules

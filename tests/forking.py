"""Running a check in a forked child (Celery's prefork workers fork after start-up)."""

import os
from collections.abc import Callable


def true_in_forked_child(check: Callable[[], bool]) -> bool:
    """Fork, run `check` in the child, and return what it answered (False if it raised).

    The child leaves with os._exit at once, so nothing of the parent (test database, servers,
    atexit handlers) is closed or run from it.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, b"1" if check() else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        return os.read(read_end, 1) == b"1"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)

"""The one way tests wait for an event: poll it with a deadline, fail naming what never happened (stdlib only).

    from waiting import wait_until, wait_for_line
    port = wait_until("the server's port file", lambda: read_port(path), proc=server)
    line = wait_for_line(proc, "listening on")

Everything that waits on something it cannot block on (a health status, a file, a metric, a
browser's DOM, a process' output line) goes through :func:`wait_until`, so every wait has a
deadline, a message that says what was awaited, and the same handling of a process that died
first. Blocking primitives that take a timeout (``Event.wait``, ``Condition.wait_for``,
``Popen.wait``) need no helper. The benchmarks import this module too (via tests/loopback.py).
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
import weakref
from collections.abc import Callable
from typing import IO, Any, TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0  # seconds: generous for a busy 2-core box; a hang still fails well inside the test timeout
DEFAULT_POLL = 0.05  # seconds between checks


def wait_until(
    what: str,
    check: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    poll: float = DEFAULT_POLL,
    retry_on: tuple[type[BaseException], ...] = (),
    proc: subprocess.Popen[Any] | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``check()`` until it returns something truthy, and return that value.

    Args:
        what: the awaited event, for the failure message ("version 2 answers").
        check: the probe; any exception it raises ends the wait, except ``retry_on``.
        timeout: seconds before the wait fails.
        poll: seconds between probes (0: only yield to other threads).
        retry_on: exception types that mean "not yet" (a port not listening yet).
        proc: a process the event depends on: once it has exited, ``check`` is tried one last
            time and the wait fails with its exit status instead of running out the clock.
        detail: called on failure, its text appended to the message (a log tail).

    Raises:
        AssertionError: the event did not happen in time, or ``proc`` exited first.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        exited = proc is not None and proc.poll() is not None
        try:
            value = check()
        except retry_on as exc:
            last_error = exc
        else:
            if value:
                return value
        if exited or time.monotonic() >= deadline:
            why = f"process exited with status {proc.returncode}" if exited and proc is not None else f"not within {timeout:g} s"
            message = f"waited for {what}: {why}"
            if last_error is not None:
                message += f" (last error: {last_error!r})"
            if detail is not None:
                message += "\n" + detail()
            raise AssertionError(message)
        time.sleep(poll)


class _Lines:
    """A reader thread that queues a stream's lines, so a wait for a line can have a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.ended = False
        threading.Thread(target=self._read, args=(stream,), daemon=True, name="wait-for-line").start()

    def _read(self, stream: IO[str]) -> None:
        for line in iter(stream.readline, ""):
            self.queue.put(line)
        self.queue.put(None)

    def next_line(self) -> str | None:
        """The next unread line, or None when none has arrived yet (or the stream has ended)."""
        try:
            line = self.queue.get_nowait()
        except queue.Empty:
            return None
        if line is None:
            self.ended = True
            return None
        self.seen.append(line)
        return line


_READERS: weakref.WeakKeyDictionary[subprocess.Popen[str], _Lines] = weakref.WeakKeyDictionary()


def _lines(proc: subprocess.Popen[str]) -> _Lines:
    if proc not in _READERS:
        assert proc.stdout is not None, "wait_for_line needs stdout=subprocess.PIPE (text=True)"
        _READERS[proc] = _Lines(proc.stdout)
    return _READERS[proc]


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Read the process' output (``stdout=PIPE``, ``text=True``) until a line contains ``needle``; return it.

    Lines are read on a thread, so the deadline holds even when the process prints nothing; a later
    call goes on from the line after the match. :func:`lines_seen` has every line read so far.
    """
    lines = _lines(proc)

    def match() -> str | None:
        while (line := lines.next_line()) is not None:
            if needle in line:
                return line
        if lines.ended:
            raise AssertionError(f"{needle!r} not seen before the output ended (status {proc.poll()}):\n" + "".join(lines.seen))
        return None

    found = wait_until(f"a line with {needle!r}", match, timeout, poll=0.02, detail=lambda: "output so far:\n" + "".join(lines.seen))
    assert found is not None
    return found


def lines_seen(proc: subprocess.Popen[str]) -> list[str]:
    """Every line :func:`wait_for_line` has read from ``proc`` so far."""
    return list(_lines(proc).seen)

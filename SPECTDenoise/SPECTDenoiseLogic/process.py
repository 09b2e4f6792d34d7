"""A background child process that reports JSON lines on stdout, read without blocking, killed as a group.

The child runs in a new session (its own process group), so Cancel reaches the whole tree — a launcher such as
Slicer's ``PythonSlicer`` and the Python it starts — with SIGTERM, then SIGKILL after a grace period.
On Windows the tree is ended with ``taskkill /T``.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any


class JsonLinesProcess:
    """Start ``command``; a reader thread turns each stdout line into a dict (non-JSON lines become
    ``{"event": "log", "message": line}``) and queues it; stderr goes to ``stderr_path``."""

    def __init__(self, command: Sequence[str], stderr_path: str | os.PathLike,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> None:
        self.stderr_path = Path(stderr_path)
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        platform_options: dict[str, Any] = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if sys.platform == "win32"
            else {"start_new_session": True}
        )
        with open(self.stderr_path, "wb") as stderr:  # the child keeps its own handle
            self._process = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                env=dict(env) if env is not None else None, cwd=cwd, **platform_options,
            )
        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True)
        self._reader.start()
        self._kill_deadline: float | None = None

    @property
    def pid(self) -> int:
        """Process id of the child (also its process group id on POSIX)."""
        return self._process.pid

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            self._events.put(event if isinstance(event, dict) else {"event": "log", "message": line})
        stream.close()

    def events(self) -> list[dict[str, Any]]:
        """Return the events read since the last call (never blocks)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def exit_code(self) -> int | None:
        """The exit code once the child has ended and all its output has been read, else None.

        After :meth:`terminate`, escalates to SIGKILL when the grace period has passed.
        """
        code = self._process.poll()
        if code is None:
            if self._kill_deadline is not None and time.monotonic() >= self._kill_deadline:
                self._signal_group(kill=True)
            return None
        if self._kill_deadline is not None:
            self._signal_group(kill=True)  # grandchildren left behind by a launcher
            self._kill_deadline = None
        if self._reader.is_alive():
            self._reader.join(timeout=0.05)
            if self._reader.is_alive():
                return None
        return code

    def terminate(self, grace_s: float = 5.0) -> None:
        """Ask the whole process group to stop (SIGTERM); :meth:`exit_code` sends SIGKILL after ``grace_s``."""
        if self._process.poll() is None:
            self._signal_group(kill=False)
            self._kill_deadline = time.monotonic() + grace_s

    def stderr_tail(self, characters: int = 2000) -> str:
        """The last ``characters`` of what the child wrote on stderr."""
        try:
            return self.stderr_path.read_bytes()[-characters:].decode("utf-8", errors="replace").strip()
        except OSError:
            return ""

    def _signal_group(self, kill: bool) -> None:
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.pid)], capture_output=True, check=False)
            return
        try:
            os.killpg(self.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass

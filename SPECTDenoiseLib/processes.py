"""Background commands that report JSON lines on stdout: started, read without blocking, stopped as a whole tree.

Every command the CLI's batch mode and the Slicer module run in the background
(``python -m SPECTDenoiseLib.worker``, ``python -m SPECTDenoiseLib --events jsonl simulate|models download ...``)
speaks the worker protocol: progress events, then one ``done`` or ``error`` event
(``{"event": "error", "message": ..., "exit_code": N}``). This module is the one place that launches them: :class:`JsonLinesProcess` puts the child in its own process group (POSIX) or
process group without a console window (Windows), so Cancel reaches a launcher such as Slicer's ``PythonSlicer``
and the Python it starts — SIGTERM first, SIGKILL after a grace period; ``taskkill /T`` on Windows.
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

LIBRARY_ROOT = Path(__file__).resolve().parent.parent


def library_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return ``base`` (default: this process's environment) with the folder holding ``SPECTDenoiseLib`` first on
    ``PYTHONPATH``, so ``python -m SPECTDenoiseLib...`` finds this copy of the library."""
    environment = dict(os.environ if base is None else base)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LIBRARY_ROOT), environment.get("PYTHONPATH")]))
    return environment


def failure_message(error_event: Mapping[str, Any] | None, exit_code: int, stderr_tail: str = "") -> str:
    """One sentence for a background command that did not succeed.

    The command's own ``error`` event wins; a negative ``exit_code`` means it was killed by that signal (e.g. by
    the out-of-memory killer); otherwise it crashed without reporting, and the last line it wrote on stderr is added.
    """
    if error_event is not None and error_event.get("message"):
        return str(error_event["message"])
    if exit_code < 0:
        return (f"The worker was killed by {signal.Signals(-exit_code).name} (for example when the computer ran "
                "out of memory); nothing was imported. Run it again, or use a smaller volume or the CPU device.")
    lines = stderr_tail.splitlines()
    return f"The worker stopped unexpectedly (exit code {exit_code}): {lines[-1] if lines else 'no error message'}"


# Windows process creation flags (winbase.h; subprocess defines them only on Windows).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000


def popen_options(platform: str = sys.platform) -> dict[str, Any]:
    """``subprocess.Popen`` options that give a child its own process group (so Cancel reaches its whole tree) and,
    on Windows, no console window (as ``slicer.util.launchConsoleProcess`` hides it)."""
    if platform == "win32":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


class JsonLinesProcess:
    """Start ``command``; a reader thread turns each stdout line into a dict (a line that is not a JSON object
    becomes ``{"event": "log", "message": line}``) and queues it.

    stderr goes to ``stderr_path`` (None: inherited from this process). ``env`` defaults to
    :func:`library_environment`.
    """

    def __init__(self, command: Sequence[str], stderr_path: str | os.PathLike | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None) -> None:
        self.stderr_path = Path(stderr_path) if stderr_path is not None else None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._kill_deadline: float | None = None
        options = popen_options()
        stderr = open(self.stderr_path, "wb") if self.stderr_path is not None else None
        try:
            self._process = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
                env=dict(env) if env is not None else library_environment(), cwd=cwd, **options,
            )
        finally:
            if stderr is not None:
                stderr.close()  # the child holds its own handle
        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True)
        self._reader.start()

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
            except (json.JSONDecodeError, RecursionError, ValueError):
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

        After :meth:`terminate`, sends SIGKILL to the group when the grace period has passed.
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

    def follow(self, on_event: Callable[[dict[str, Any]], None], interval_s: float = 0.05) -> int:
        """Pass every event to ``on_event`` until the child has ended; return its exit code (blocks)."""
        while True:
            code = self.exit_code()
            for event in self.events():
                on_event(event)
            if code is not None:
                return code
            time.sleep(interval_s)

    def terminate(self, grace_s: float = 5.0) -> None:
        """Ask the whole process group to stop (SIGTERM); :meth:`exit_code` sends SIGKILL after ``grace_s``."""
        if self._process.poll() is None:
            self._signal_group(kill=False)
            self._kill_deadline = time.monotonic() + grace_s

    def stderr_tail(self, characters: int = 2000) -> str:
        """The last ``characters`` of what the child wrote on stderr ("" when stderr was inherited)."""
        if self.stderr_path is None:
            return ""
        try:
            return self.stderr_path.read_bytes()[-characters:].decode("utf-8", errors="replace").strip()
        except OSError:
            return ""

    def _signal_group(self, kill: bool) -> None:
        if sys.platform == "win32":
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(self.pid)], capture_output=True, check=False,
                           creationflags=CREATE_NO_WINDOW)
            return
        try:
            os.killpg(self.pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass

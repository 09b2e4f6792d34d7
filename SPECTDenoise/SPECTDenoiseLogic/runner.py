"""Background runs (denoising, low-count simulation) in child processes, driven by an explicit state machine.

::

    idle ─start→ starting ─→ running ─done→ importing ─→ done
                    │           │ cancel            │
                    └─→ failed ←┴─(error / crash)───┘      cancelling ─(process ended)→ idle

A run carries out one :class:`Job`: ``start`` makes a private temporary folder (mode 0700), the job writes its
inputs there and names its :class:`Step` s, each one command ``PYTHON ARGUMENTS...`` run after the other with the
given Python (Slicer's ``PythonSlicer`` in the application, ``sys.executable`` in tests) through the core's one
process launcher, :class:`SPECTDenoiseLib.processes.JsonLinesProcess`. A job of several steps (simulate each
fraction, then denoise each) is one run: it imports everything at the end, or nothing when a step fails, is
cancelled or the scene closes. The widget calls :meth:`BackgroundRunner.poll` from a timer: it returns the
progress read so far (JSON lines of the worker protocol within a step, and each finished step), starts the next
step and, when the last one has ended, lets the job import its outputs as volume nodes. Every step reports its
errors as a JSON-lines ``error`` event. Slicer never waits on a child; Cancel kills the running child's whole
process group. The folder is deleted at the end.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

import slicer

from SPECTDenoiseLib.errors import SPECTDenoiseError
from SPECTDenoiseLib.processes import JsonLinesProcess, failure_message


class State(enum.Enum):
    """Where a run stands; the widget turns Apply into Cancel while :attr:`busy`."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    IMPORTING = "importing"
    DONE = "done"
    CANCELLING = "cancelling"
    FAILED = "failed"

    @property
    def busy(self) -> bool:
        """True while a child process may be alive (Apply shows Cancel)."""
        return self in (State.STARTING, State.RUNNING, State.IMPORTING, State.CANCELLING)


TRANSITIONS = {
    State.IDLE: {State.STARTING},
    State.STARTING: {State.RUNNING, State.FAILED},
    State.RUNNING: {State.IMPORTING, State.CANCELLING, State.FAILED},
    State.IMPORTING: {State.DONE, State.FAILED},
    State.CANCELLING: {State.IDLE},
    State.DONE: {State.STARTING},
    State.FAILED: {State.STARTING},
}


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """What the GUI shows: the state, the progress fraction (0–1, None if unknown) and a status line."""

    state: State
    fraction: float | None
    message: str


@dataclasses.dataclass(frozen=True)
class Step:
    """One child process of a run: its arguments after the Python executable and the status line it starts with."""

    arguments: list[str]
    message: str


class Job(Protocol):
    """What a run does; :class:`~SPECTDenoiseLogic.denoising.DenoiseRequest` and
    :class:`~SPECTDenoiseLogic.teaching.LowCountRequest` are jobs."""

    def write_inputs(self, folder: Path) -> list[Step]:
        """Write the inputs into ``folder`` and return the steps to run there, in order."""

    def import_outputs(self, scene: slicer.vtkMRMLScene, folder: Path) -> tuple[dict[str, slicer.vtkMRMLNode], str]:
        """Read the outputs the steps left in ``folder`` into nodes; return them by name and a note ("" or
        " (…)") for the status line."""


class BackgroundRunner:
    """Runs one :class:`Job` at a time in child processes; see the module docstring."""

    def __init__(self, scene: slicer.vtkMRMLScene, python: str, grace_s: float = 5.0) -> None:
        self.scene = scene
        self.python = python
        self.grace_s = grace_s
        self.state = State.IDLE
        self.job: Job | None = None
        self.outputs: dict[str, slicer.vtkMRMLNode] = {}
        self.message = ""
        self._steps: list[Step] = []
        self._step = 0
        self._process: JsonLinesProcess | None = None
        self._folder: Path | None = None
        self._error: dict | None = None
        self._started = 0.0

    @property
    def folder(self) -> Path | None:
        """The private temporary folder of the current run (None when no run holds one)."""
        return self._folder

    @property
    def pid(self) -> int | None:
        """Process id of the running child, or None."""
        return self._process.pid if self._process is not None else None

    def start(self, job: Job) -> list[RunEvent]:
        """Write the job's inputs and launch its first step; returns the events of this step (running or failed)."""
        self._set(State.STARTING)
        self.job, self.outputs, self._error, self._step = job, {}, None, 0
        self._started = time.monotonic()
        events = [RunEvent(State.STARTING, 0.0, "Writing inputs…")]
        try:
            self._folder = Path(tempfile.mkdtemp(prefix="spectdenoise-"))
            os.chmod(self._folder, 0o700)
            self._steps = job.write_inputs(self._folder)
            self._launch()
        except (SPECTDenoiseError, OSError) as error:
            return events + [self._fail(str(error))]
        self._set(State.RUNNING)
        return events + [RunEvent(State.RUNNING, 0.0, self._steps[0].message)]

    def _launch(self) -> None:
        command = [self.python, *self._steps[self._step].arguments]
        self._process = JsonLinesProcess(command, self._folder / f"step{self._step + 1}.log", cwd=self._folder)

    def poll(self) -> list[RunEvent]:
        """Return the events since the last call; start the next step when one has ended, and after the last one
        import the outputs or report why not."""
        if self.state not in (State.RUNNING, State.CANCELLING):
            return []
        events = []
        for event in self._process.events():
            kind = event.get("event")
            if kind == "progress" and self.state is State.RUNNING:
                fraction = event.get("fraction")
                message = event.get("message") or event.get("stage") or ""
                events.append(RunEvent(State.RUNNING, self._overall(fraction), message))
            elif kind == "error":
                self._error = event
        code = self._process.exit_code()
        if code is None:
            return events
        if self.state is State.CANCELLING:
            self._set(State.IDLE)
            self._cleanup()
            return events + [RunEvent(State.IDLE, None, "Cancelled.")]
        if code != 0 or self._error is not None:
            return events + [self._fail(failure_message(self._error, code, self._process.stderr_tail()))]
        self._step += 1
        if self._step == len(self._steps):
            return events + self._import()
        try:
            self._launch()
        except OSError as error:
            return events + [self._fail(str(error))]
        return events + [RunEvent(State.RUNNING, self._overall(0.0), self._steps[self._step].message)]

    def _overall(self, fraction: float | None) -> float | None:
        """Progress of the whole run from the progress ``fraction`` of the current step."""
        return None if fraction is None else (self._step + float(fraction)) / len(self._steps)

    def cancel(self) -> list[RunEvent]:
        """Stop the running child (SIGTERM to its process group, SIGKILL after the grace period); no-op when idle."""
        if self.state is not State.RUNNING:
            return []
        self._set(State.CANCELLING)
        self._process.terminate(self.grace_s)
        return [RunEvent(State.CANCELLING, None, "Cancelling…")]

    def wait(self, timeout_s: float, interval_s: float = 0.05) -> list[RunEvent]:
        """Poll until no child is alive or ``timeout_s`` has passed (for scripts, tests and module close)."""
        deadline = time.monotonic() + timeout_s
        events = self.poll()
        while self.state.busy and time.monotonic() < deadline:
            time.sleep(interval_s)
            events += self.poll()
        return events

    def _import(self) -> list[RunEvent]:
        """Let the job import its outputs; when that fails, remove every node it added, so a run adds all or nothing.
        Any error fails the run: one left in 'importing' could be neither cancelled nor followed by another."""
        self._set(State.IMPORTING)
        before = {node.GetID() for node in self.scene.GetNodes()}
        try:
            self.outputs, note = self.job.import_outputs(self.scene, self._folder)
        except Exception as error:  # noqa: BLE001 - also slicer.util's RuntimeError and MRML surprises
            for node in [node for node in self.scene.GetNodes() if node.GetID() not in before]:
                if node.GetScene() is not None:  # a display node goes with its volume
                    self.scene.RemoveNode(node)
            return [self._fail(f"Could not import the results: {error}")]
        self._set(State.DONE)
        self._cleanup()
        return [RunEvent(State.DONE, 1.0, f"Done in {time.monotonic() - self._started:.1f} s{note}.")]

    def _fail(self, message: str) -> RunEvent:
        self._set(State.FAILED)
        self.message = message
        self._cleanup()
        return RunEvent(State.FAILED, None, message)

    def _set(self, state: State) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"cannot go from {self.state.value} to {state.value}")
        self.state = state
        self.message = ""

    def _cleanup(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder, self._process = None, None

"""Denoising in a background worker process, driven by an explicit state machine.

::

    idle ─start→ starting ─→ running ─done→ importing ─→ done
                    │           │ cancel            │
                    └─→ failed ←┴─(error / crash)───┘      cancelling ─(worker ended)→ idle

``start`` writes the inputs to a private temporary folder (mode 0700) and launches
``python -m SPECTDenoiseLib.worker request.json`` with the given Python (Slicer's ``PythonSlicer`` in the
application, ``sys.executable`` in tests). The widget calls :meth:`DenoiseRunner.poll` from a timer: it returns
the progress events read so far and, when the worker has finished, imports its outputs as volume nodes. Slicer
never waits on the worker; Cancel kills the worker's whole process group. The folder is deleted at the end.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import slicer

import SPECTDenoiseLib
from SPECTDenoiseLib.errors import SPECTDenoiseError

from .outputs import KINDS, finish_output, get_or_create_output
from .process import JsonLinesProcess
from .volumes import read_node, write_node


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
        """True while a worker may be alive (Apply shows Cancel)."""
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


@dataclasses.dataclass
class DenoiseRequest:
    """One denoising run.

    Attributes
    ----------
    input_node : the low-count SPECT volume.
    ct_node : co-registered CT for models that take it, or None.
    model : catalogue name, hub repo id (``org/name[@revision]``) or local folder; None runs the default model.
    device : ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    outputs : output kinds to produce (``"denoised"`` always), each optionally with an existing node to fill.
    samples, steps : DDPM samples and sampling steps (None: the model's defaults).
    seed : random seed of the sampler.
    """

    input_node: slicer.vtkMRMLScalarVolumeNode
    ct_node: slicer.vtkMRMLScalarVolumeNode | None = None
    model: str | None = None
    device: str = "auto"
    outputs: dict[str, slicer.vtkMRMLScalarVolumeNode | None] = dataclasses.field(
        default_factory=lambda: {"denoised": None, "difference": None})
    samples: int | None = None
    steps: int | None = None
    seed: int = 0


class DenoiseRunner:
    """Runs one :class:`DenoiseRequest` at a time in a worker process; see the module docstring."""

    def __init__(self, scene: slicer.vtkMRMLScene, python: str, library_path: str | os.PathLike | None = None,
                 grace_s: float = 5.0) -> None:
        self.scene = scene
        self.python = python
        self.library_path = Path(library_path or Path(SPECTDenoiseLib.__file__).parent.parent)
        self.grace_s = grace_s
        self.state = State.IDLE
        self.outputs: dict[str, slicer.vtkMRMLScalarVolumeNode] = {}
        self.message = ""
        self._request: DenoiseRequest | None = None
        self._process: JsonLinesProcess | None = None
        self._folder: Path | None = None
        self._paths: dict[str, Path] = {}
        self._finished: dict | None = None
        self._started = 0.0

    @property
    def folder(self) -> Path | None:
        """The private temporary folder of the current run (None when no run holds one)."""
        return self._folder

    @property
    def pid(self) -> int | None:
        """Process id of the running worker, or None."""
        return self._process.pid if self._process is not None else None

    def start(self, request: DenoiseRequest) -> list[RunEvent]:
        """Write the inputs and launch the worker; returns the events of this step (running or failed)."""
        unknown = set(request.outputs) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown output kinds {sorted(unknown)}")
        self._set(State.STARTING)
        self._request, self.outputs, self._finished = request, {}, None
        self._started = time.monotonic()
        events = [RunEvent(State.STARTING, 0.0, "Writing inputs…")]
        try:
            self._folder = Path(tempfile.mkdtemp(prefix="spectdenoise-"))
            os.chmod(self._folder, 0o700)
            command = [self.python, "-m", "SPECTDenoiseLib.worker", str(self._write_request(request))]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.library_path), env.get("PYTHONPATH")]))
            self._process = JsonLinesProcess(command, self._folder / "worker.log", env=env, cwd=self._folder)
        except (SPECTDenoiseError, OSError) as error:
            return events + [self._fail(str(error))]
        self._set(State.RUNNING)
        return events + [RunEvent(State.RUNNING, 0.0, "Worker started…")]

    def _write_request(self, request: DenoiseRequest) -> Path:
        folder = self._folder
        input_path = write_node(request.input_node, folder / "input.nrrd")
        ct_path = write_node(request.ct_node, folder / "ct.nrrd") if request.ct_node is not None else None
        self._paths = {kind: folder / f"{kind}.nrrd" for kind in KINDS if kind == "denoised" or kind in request.outputs}
        body = {
            "input": str(input_path),
            "output": str(self._paths["denoised"]),
            "ct": str(ct_path) if ct_path else None,
            "model": request.model,
            "device": request.device,
            "difference": str(self._paths["difference"]) if "difference" in self._paths else None,
            "variance": str(self._paths["variance"]) if "variance" in self._paths else None,
            "samples": request.samples,
            "steps": request.steps,
            "seed": request.seed,
        }
        path = folder / "request.json"
        path.write_text(json.dumps(body, indent=1), encoding="utf-8")
        return path

    def poll(self) -> list[RunEvent]:
        """Return the events since the last call; when the worker has ended, import outputs or report why not."""
        if self.state not in (State.RUNNING, State.CANCELLING):
            return []
        events = []
        for event in self._process.events():
            kind = event.get("event")
            if kind == "progress" and self.state is State.RUNNING:
                fraction = event.get("fraction")
                message = event.get("message") or event.get("stage") or ""
                events.append(RunEvent(State.RUNNING, float(fraction) if fraction is not None else None, message))
            elif kind in ("done", "error"):
                self._finished = event
        code = self._process.exit_code()
        if code is None:
            return events
        if self.state is State.CANCELLING:
            self._set(State.IDLE)
            self._cleanup()
            return events + [RunEvent(State.IDLE, None, "Cancelled.")]
        if code == 0 and self._finished is not None and self._finished.get("event") == "done":
            return events + self._import()
        return events + [self._fail(self._failure_message(code))]

    def cancel(self) -> list[RunEvent]:
        """Stop the worker (SIGTERM to its process group, SIGKILL after the grace period); no-op when idle."""
        if self.state is not State.RUNNING:
            return []
        self._set(State.CANCELLING)
        self._process.terminate(self.grace_s)
        return [RunEvent(State.CANCELLING, None, "Cancelling…")]

    def wait(self, timeout_s: float, interval_s: float = 0.05) -> list[RunEvent]:
        """Poll until no worker is alive or ``timeout_s`` has passed (for scripts, tests and module close)."""
        deadline = time.monotonic() + timeout_s
        events = self.poll()
        while self.state.busy and time.monotonic() < deadline:
            time.sleep(interval_s)
            events += self.poll()
        return events

    def _import(self) -> list[RunEvent]:
        self._set(State.IMPORTING)
        request = self._request
        try:
            for kind, path in self._paths.items():
                if not path.exists():
                    if kind == "denoised":
                        raise FileNotFoundError("the worker finished without writing the denoised volume")
                    continue
                node = get_or_create_output(self.scene, request.input_node, kind, request.outputs.get(kind))
                read_node(self.scene, path, node.GetName(), node)
                finish_output(request.input_node, node, kind)
                self.outputs[kind] = node
        except (SPECTDenoiseError, OSError) as error:
            return [self._fail(f"Could not import the results: {error}")]
        self._set(State.DONE)
        self._cleanup()
        missing = [kind for kind in self._paths if kind not in self.outputs]
        note = f" (the model gives no {', '.join(missing)})" if missing else ""
        return [RunEvent(State.DONE, 1.0, f"Done in {time.monotonic() - self._started:.1f} s{note}.")]

    def _failure_message(self, code: int) -> str:
        if self._finished is not None and self._finished.get("event") == "error":
            return str(self._finished.get("message") or f"The worker failed (exit code {code}).")
        if code < 0:
            return (f"The worker was killed by {signal.Signals(-code).name} (for example when the computer ran out "
                    "of memory); nothing was imported. Run it again, or use a smaller volume or the CPU device.")
        tail = self._process.stderr_tail()
        detail = tail.splitlines()[-1] if tail else "no error message"
        return f"The worker stopped unexpectedly (exit code {code}): {detail}"

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

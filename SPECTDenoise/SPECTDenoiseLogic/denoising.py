"""A denoising job for the background runner: ``python -m SPECTDenoiseLib.worker request.json`` on the inputs
written to the run's folder, then its outputs imported as ``"<input> denoised"``, ``difference``, ``variance``.

The worker request itself is :class:`SPECTDenoiseLib.worker.Request` (the one request builder, shared with the
command line and batch mode); :func:`worker_step` writes it and names the step that runs it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import slicer

from SPECTDenoiseLib.errors import InputError
from SPECTDenoiseLib.worker import Request

from .outputs import KINDS, finish_output, get_or_create_output
from .runner import Step
from .volumes import read_node, require_same_frame, write_node


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """How the model runs: ``model`` (catalogue name, ``org/name[@revision]`` or folder; None: the default model),
    ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``), diffusion ``samples`` and ``steps`` (None: the model's
    defaults), the sampler ``seed`` and the ``uptake_guard`` (see :mod:`SPECTDenoiseLib.uptake_guard`)."""

    model: str | None = None
    device: str = "auto"
    samples: int | None = None
    steps: int | None = None
    seed: int = 0
    uptake_guard: bool = True


def worker_step(request_path: Path, options: ModelOptions, input_path: Path, output: Path, *,
                ct: Path | None = None, difference: Path | None = None, variance: Path | None = None,
                message: str = "Worker started…") -> Step:
    """Write the worker request for ``input_path`` → ``output`` (and the optional outputs) to ``request_path`` and
    return the step that runs the worker on it. The input may be written by an earlier step of the same job."""
    request = Request(input=input_path, output=output, ct=ct, model=options.model, device=options.device,
                      difference=difference, variance=variance, samples=options.samples, steps=options.steps,
                      seed=options.seed, uptake_guard=options.uptake_guard)
    return Step(["-m", "SPECTDenoiseLib.worker", str(request.write(request_path))], message)


@dataclasses.dataclass
class DenoiseRequest:
    """One denoising run (a :class:`~SPECTDenoiseLogic.runner.Job`).

    Attributes
    ----------
    input_node : the low-count SPECT volume.
    ct_node : co-registered CT for models that take it, or None.
    model, device, samples, steps, seed, uptake_guard : see :class:`ModelOptions`.
    outputs : output kinds to produce (``"denoised"`` always), each optionally with an existing node to fill.
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
    uptake_guard: bool = True

    def __post_init__(self) -> None:
        """Raise ValueError for an unknown output kind, InputError for an output node that is an input or another
        output's (Slicer's output selectors offer every scalar volume; the input would be overwritten) or for a CT
        placed by another transform than the input (:func:`~SPECTDenoiseLogic.volumes.require_same_frame`)."""
        require_same_frame(self.input_node, self.ct_node)
        unknown = set(self.outputs) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown output kinds {sorted(unknown)}")
        chosen = [node for node in self.outputs.values() if node is not None]
        if any(node is self.input_node or node is self.ct_node for node in chosen) or len(
                {id(node) for node in chosen}) < len(chosen):
            raise InputError("Each output needs its own volume, other than the input and the CT: choose another one "
                             "or leave it at (create new).")

    @property
    def options(self) -> ModelOptions:
        """The model options of this run."""
        return ModelOptions(self.model, self.device, self.samples, self.steps, self.seed, self.uptake_guard)

    def output_paths(self, folder: Path) -> dict[str, Path]:
        """Where the worker writes each output kind in ``folder`` ("denoised" always)."""
        return {kind: folder / f"{kind}.nrrd" for kind in KINDS if kind == "denoised" or kind in self.outputs}

    def write_inputs(self, folder: Path) -> list[Step]:
        """Write the volumes (uncompressed: fast) and ``request.json`` into ``folder``; one step runs the worker."""
        input_path = write_node(self.input_node, folder / "input.nrrd")
        ct_path = write_node(self.ct_node, folder / "ct.nrrd") if self.ct_node is not None else None
        paths = self.output_paths(folder)
        return [worker_step(folder / "request.json", self.options, input_path, paths["denoised"], ct=ct_path,
                            difference=paths.get("difference"), variance=paths.get("variance"))]

    def import_outputs(self, scene: slicer.vtkMRMLScene, folder: Path) -> tuple[dict[str, slicer.vtkMRMLNode], str]:
        """Read the worker's outputs into (new or given) nodes named after the input; note the kinds it lacks."""
        outputs = {}
        paths = self.output_paths(folder)
        for kind, path in paths.items():
            if not path.exists():
                if kind == "denoised":
                    raise FileNotFoundError("the worker finished without writing the denoised volume")
                continue
            node = get_or_create_output(scene, self.input_node, kind, self.outputs.get(kind))
            read_node(scene, path, node.GetName(), node)
            finish_output(self.input_node, node, kind)
            outputs[kind] = node
        missing = [kind for kind in paths if kind not in outputs]
        return outputs, f" (the model gives no {', '.join(missing)})" if missing else ""

"""A denoising job for the background runner: ``python -m SPECTDenoiseLib.worker request.json`` on the inputs
written to the run's folder, then its outputs imported as ``"<input> denoised"``, ``difference``, ``variance``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import slicer

from .outputs import KINDS, finish_output, get_or_create_output
from .runner import Step
from .volumes import read_node, write_node


@dataclasses.dataclass
class DenoiseRequest:
    """One denoising run (a :class:`~SPECTDenoiseLogic.runner.Job`).

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

    def __post_init__(self) -> None:
        unknown = set(self.outputs) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown output kinds {sorted(unknown)}")

    def output_paths(self, folder: Path) -> dict[str, Path]:
        """Where the worker writes each output kind in ``folder`` ("denoised" always)."""
        return {kind: folder / f"{kind}.nrrd" for kind in KINDS if kind == "denoised" or kind in self.outputs}

    def write_inputs(self, folder: Path) -> list[Step]:
        """Write the volumes and ``request.json`` into ``folder``; the one step runs the worker on them."""
        input_path = write_node(self.input_node, folder / "input.nrrd")
        ct_path = write_node(self.ct_node, folder / "ct.nrrd") if self.ct_node is not None else None
        paths = self.output_paths(folder)
        body = {
            "input": str(input_path),
            "output": str(paths["denoised"]),
            "ct": str(ct_path) if ct_path else None,
            "model": self.model,
            "device": self.device,
            "difference": str(paths["difference"]) if "difference" in paths else None,
            "variance": str(paths["variance"]) if "variance" in paths else None,
            "samples": self.samples,
            "steps": self.steps,
            "seed": self.seed,
        }
        request = folder / "request.json"
        request.write_text(json.dumps(body, indent=1), encoding="utf-8")
        return [Step(["-m", "SPECTDenoiseLib.worker", str(request)], "Worker started…")]

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

"""The ``config.json`` of a model package: what to build and how inference must feed it.

A config holds data only: an architecture *name* from the registry (never a class path or code), that
network's constructor arguments, and the facts inference and the model card need. Anything else is rejected.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..records import unknown_keys

INPUT_CHANNELS = ("spect", "ct")
SAMPLING_MODES = ("slices", "patches")
NORMALISATIONS = ("robust_median", "body_mean", "percentile99")
KINDS = ("deterministic", "diffusion")
DIFFUSION_KEYS = ("train_timesteps", "schedule", "default_steps", "default_samples", "variance_scale")
OPTIONAL_DIFFUSION_KEYS = {"variance_pooling_voxels": 0.0}
"""Diffusion settings a config may leave out, with the value used then (packages written before they existed)."""
MAX_POOLING_VOXELS = 8.0
SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
"""Beta schedules (diffusers' ``beta_schedule`` names); every one is rescaled to zero terminal SNR."""
MAX_PATCH_SIDE = 256
MAX_PATCH_VOXELS = 2**22  # 128 × 128 × 256: a 3D window's activations must fit in memory
MAX_TRAIN_TIMESTEPS = 10_000
MAX_DEFAULT_SAMPLES = 256
MAX_VARIANCE_SCALE = 1e6
MAX_LIST_ITEMS = 64  # count fractions, tracers
VARIANCE_MEANING = (
    "The variance map (diffusion models only) is, per voxel, the model's estimate of the squared error of the "
    "denoised image, in the image's units squared; its square root is σ, the error's standard deviation in "
    "image units. It is the mean squared spread of sampled refinements around the denoised image (averaged "
    "over neighbouring voxels where the model's variance_pooling_voxels says so), times the model's "
    "variance_scale fitted on simulated validation scans: were it exactly calibrated, 68 % of voxels would lie "
    "within 1 σ of the noise-free image and 95 % within 2 σ, inside the body, where it is fitted; in the air "
    "around the body, where the activity is zero, it may over-state the error several-fold. The scale holds on "
    "average over scans, not in every scan: in a single scan σ may be well too small or too large. It tells "
    "how large "
    "the error is on average and follows brightness; unless the model card's measurement says otherwise, it is "
    "not a map of where the model is wrong, nor a lesion detector: check lesions against the input and the "
    "difference map."
)
"""What a diffusion model's variance output means and how far to trust it: the one text the CLI, the model
cards and the Slicer panel show (their measured coverage is in each model card)."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network and run it on a volume.

    Attributes
    ----------
    architecture : registry name of the network (see ``SPECTDenoiseLib.models.registry.ARCHITECTURES``).
    arguments : keyword arguments of that network's constructor (its whole configuration, as in MONAI).
    input_channels : image kinds fed to the network, in order: ``("spect",)`` or ``("spect", "ct")``.
    sampling : ``"slices"`` — 2D network run on axial slices ([z] batches); ``"patches"`` — 3D network trained
        on patches of ``patch_size`` voxels ([z, y, x]) and run on the whole volume in one pass where memory
        allows, else on Gaussian-blended sliding windows of that size (``tiling.run_patches``).
    context_slices : for ``"slices"``, neighbouring slices taken on *each* side and stacked as channels
        (2.5D); the network then sees ``(2k + 1) * len(input_channels)`` channels (image kind major).
    patch_size : training patch and inference window size [z, y, x] for ``"patches"``.
    size_multiple : in-plane (and, for patches, every) dimension must be a multiple of this; inference pads.
    normalisation : how intensities are scaled before the network and restored after (``"robust_median"``:
        divide by the tissue level of ``normalisation.robust_tissue_level``, unmoved by hot organs;
        ``"body_mean"``: the mean inside the body; ``"percentile99"``: the 99th percentile of body voxels).
    kind : ``"deterministic"`` (one output) or ``"diffusion"`` (predict and refine: the base network's image and
        a variance map from sampled refinements, :data:`VARIANCE_MEANING`).
    diffusion : for diffusion models, ``{"train_timesteps": int, "schedule": str, "default_steps": int,
        "default_samples": int, "variance_scale": float}``: the schedule is one of :data:`SCHEDULES`, and the
        samples' mean squared spread around the image returned is multiplied by ``variance_scale`` (a
        calibration fitted on validation cases; 1.0 = uncalibrated); optional ``"variance_pooling_voxels"``
        (default 0: none) is the σ, in voxels, of the Gaussian neighbourhood over which that spread is pooled
        before scaling — a few samples estimate each voxel's spread with a large error of their own (8 samples:
        about ± 50 %), and pooling over neighbours, whose true spreads are alike, cuts it
        (``inference.spread_around``).
    voxel_mm_range : the voxel sizes (mm) the model was trained on, [min, max].
    count_fractions : the count fractions (low / full) the model was trained on.
    tracers : isotopes / tracers trained on, e.g. ``["Tc-99m", "I-123", "Lu-177"]``.
    description : one line for catalogues and the Slicer panel.
    """

    architecture: str
    arguments: Mapping[str, Any]
    input_channels: tuple[str, ...] = ("spect",)
    sampling: str = "slices"
    context_slices: int = 0
    patch_size: tuple[int, int, int] | None = None
    size_multiple: int = 16
    normalisation: str = "body_mean"
    kind: str = "deterministic"
    diffusion: Mapping[str, Any] | None = None
    voxel_mm_range: tuple[float, float] = (2.0, 6.0)
    count_fractions: tuple[float, ...] = ()
    tracers: tuple[str, ...] = ()
    description: str = ""

    @property
    def needs_ct(self) -> bool:
        """True when the network takes a CT channel."""
        return "ct" in self.input_channels

    @property
    def network_in_channels(self) -> int:
        """Number of image channels the network receives (before any diffusion state channel)."""
        return (2 * self.context_slices + 1) * len(self.input_channels)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Validate ``data`` and build a config; raise ModelError naming the first problem."""
        from .registry import ARCHITECTURES

        if not isinstance(data, Mapping):
            raise ModelError("The model's config.json must hold a JSON object.")
        unknown = unknown_keys(data, cls)
        if unknown:
            raise ModelError(f"The model's config.json has unknown keys {unknown}; it may need a newer SPECTDenoise.")
        if "architecture" not in data or "arguments" not in data:
            raise ModelError("The model's config.json must name an 'architecture' and its 'arguments'.")
        values = dict(data)
        _expect(isinstance(values["architecture"], str) and values["architecture"] in ARCHITECTURES,
                f"unknown architecture {values['architecture']!r}; known: {sorted(ARCHITECTURES)}")
        _expect(isinstance(values["arguments"], Mapping) and all(isinstance(k, str) for k in values["arguments"]),
                "'arguments' must be an object of constructor arguments")
        _expect(_is_plain_json(values["arguments"]), "'arguments' may hold only numbers, strings, booleans and lists")
        for key in ("input_channels", "count_fractions", "tracers", "voxel_mm_range"):
            if key in values:
                _expect(isinstance(values[key], (list, tuple)), f"'{key}' must be a list")
                values[key] = tuple(values[key])
        if values.get("patch_size") is not None:
            _expect(isinstance(values["patch_size"], (list, tuple)), "'patch_size' must be a list of 3 integers")
            values["patch_size"] = tuple(values["patch_size"])
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ModelError if the fields contradict each other or hold impossible values."""
        _expect(all(isinstance(c, str) for c in self.input_channels) and len(self.input_channels) > 0
                and self.input_channels[0] == "spect"
                and set(self.input_channels) <= set(INPUT_CHANNELS) and len(set(self.input_channels)) == len(self.input_channels),
                f"'input_channels' must start with 'spect' and use only {list(INPUT_CHANNELS)}")
        _expect(all(isinstance(t, str) for t in self.tracers), "'tracers' must be a list of strings")
        _expect(isinstance(self.description, str), "'description' must be a string")
        _expect(self.sampling in SAMPLING_MODES, f"'sampling' must be one of {list(SAMPLING_MODES)}")
        _expect(self.normalisation in NORMALISATIONS, f"'normalisation' must be one of {list(NORMALISATIONS)}")
        _expect(self.kind in KINDS, f"'kind' must be one of {list(KINDS)}")
        _expect(_is_int(self.context_slices) and 0 <= self.context_slices <= 8, "'context_slices' must be 0..8")
        _expect(_is_int(self.size_multiple) and 1 <= self.size_multiple <= 256, "'size_multiple' must be 1..256")
        _expect(len(self.count_fractions) <= MAX_LIST_ITEMS and len(self.tracers) <= MAX_LIST_ITEMS
                and len(self.description) <= 1000, "'count_fractions', 'tracers' or 'description' is far too long")
        if self.sampling == "patches":
            _expect(self.patch_size is not None and len(self.patch_size) == 3
                    and all(_is_int(n) and 8 <= n <= MAX_PATCH_SIDE for n in self.patch_size)
                    and math.prod(self.patch_size) <= MAX_PATCH_VOXELS,
                    f"'patch_size' must be 3 integers in 8..{MAX_PATCH_SIDE} with at most {MAX_PATCH_VOXELS:,} "
                    "voxels in all, for patch sampling")
            _expect(self.context_slices == 0, "'context_slices' applies to slice sampling only")
        _expect(len(self.voxel_mm_range) == 2 and all(_is_number(v) and v > 0 for v in self.voxel_mm_range)
                and self.voxel_mm_range[0] <= self.voxel_mm_range[1], "'voxel_mm_range' must be [min, max] in mm")
        _expect(all(_is_number(f) and 0 < f <= 1 for f in self.count_fractions), "'count_fractions' must be in (0, 1]")
        if self.kind == "diffusion":
            d = self.diffusion or {}
            allowed = {*DIFFUSION_KEYS, *OPTIONAL_DIFFUSION_KEYS}
            _expect(isinstance(d, Mapping) and set(DIFFUSION_KEYS) <= set(d) <= allowed,
                    f"diffusion models need 'diffusion' with the keys {', '.join(DIFFUSION_KEYS)} (and optionally "
                    f"{', '.join(OPTIONAL_DIFFUSION_KEYS)}), no others")
            _expect(all(_is_int(d[k]) for k in ("train_timesteps", "default_steps", "default_samples"))
                    and 1 <= d["train_timesteps"] <= MAX_TRAIN_TIMESTEPS
                    and 1 <= d["default_steps"] <= d["train_timesteps"]
                    and 1 <= d["default_samples"] <= MAX_DEFAULT_SAMPLES,
                    f"'train_timesteps' must be 1..{MAX_TRAIN_TIMESTEPS}, 'default_steps' 1..train_timesteps and "
                    f"'default_samples' 1..{MAX_DEFAULT_SAMPLES}")
            _expect(d["schedule"] in SCHEDULES, f"the diffusion 'schedule' must be one of {list(SCHEDULES)}")
            _expect(_is_number(d["variance_scale"]) and 0 < d["variance_scale"] <= MAX_VARIANCE_SCALE,
                    f"the diffusion 'variance_scale' must be a number above 0 and at most {MAX_VARIANCE_SCALE:g}")
            pooling = self.diffusion_setting("variance_pooling_voxels")
            _expect(_is_number(pooling) and 0 <= pooling <= MAX_POOLING_VOXELS,
                    f"the diffusion 'variance_pooling_voxels' must be a number from 0 to {MAX_POOLING_VOXELS:g}")
        else:
            _expect(self.diffusion is None, "'diffusion' settings are only allowed for kind 'diffusion'")

    def diffusion_setting(self, key: str) -> Any:
        """The diffusion setting ``key``; for one the config leaves out, its :data:`OPTIONAL_DIFFUSION_KEYS`
        default."""
        return (self.diffusion or {}).get(key, OPTIONAL_DIFFUSION_KEYS.get(key))

    def save(self, path: str | Path) -> None:
        """Write the config as pretty JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read and validate a ``config.json``; raise ModelError if missing, not JSON or invalid."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"The model package has no config.json at '{path}'.") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelError(f"The model's config.json at '{path}' is not valid JSON ({error}).") from None
        return cls.from_dict(data)


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise ModelError(f"The model's config.json is invalid: {problem}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_plain_json(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain_json(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_plain_json(v) for v in value)
    return value is None or isinstance(value, (str, bool, int)) or _is_number(value)

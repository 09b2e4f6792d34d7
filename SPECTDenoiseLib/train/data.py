"""Paired training data: finding cases on disk and sampling normalised network inputs from them.

Two layouts are read:

* a simulator dataset (``spectdenoise dataset``): ``DIR/manifest.json`` listing each case's target (the
  noise-free reconstruction), low-count files per count fraction, CT and label map;
* a user's own pairs for fine-tuning: ``DIR/<case>/low*.{nii.gz,nrrd,mha}`` (one or more low-count scans),
  ``DIR/<case>/full.*`` and optionally ``ct.*`` and ``mask.*`` (lesion mask for the attention loss).

Samples are prepared exactly as inference prepares them (:mod:`SPECTDenoiseLib.normalisation`): the low-count
volume's intensity scale divides both the input and the target, CT goes through ``normalise_ct``, 2.5D inputs
come from ``stack_slices``. Lesion masks hold 1 for hot and 2 for cold lesion-like structures.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io import image_to_array, read_volume, resample_to_reference, same_geometry
from ..models.config import ModelConfig
from ..normalisation import body_mask, intensity_scale, normalise_ct, stack_slices

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
LESION_WORDS = ("lesion", "sphere", "defect", "caudate", "putamen", "tumour", "tumor")
COLD_WORDS = ("cold", "defect")
HOT, COLD = 1, 2


def lesion_labels(label_names: dict) -> tuple[int, ...]:
    """Label values whose names mark lesion-like regions (spheres, lesions, defects, striata)."""
    return tuple(sorted(int(value) for value, name in label_names.items()
                        if any(word in str(name).lower() for word in LESION_WORDS)))


def cold_labels(label_names: dict) -> tuple[int, ...]:
    """Lesion-like label values that are cold (names with "cold" or "defect")."""
    lesions = set(lesion_labels(label_names))
    return tuple(sorted(int(value) for value, name in label_names.items()
                        if int(value) in lesions and any(word in str(name).lower() for word in COLD_WORDS)))


@dataclasses.dataclass(frozen=True)
class TrainingCase:
    """One subject: low-count scans (by count fraction) and their target, all on one grid.

    ``target`` is the noise-free reconstruction for simulated data, the full-count scan for a user's own pairs.
    ``mask`` is a label map for lesion attention; with ``mask_labels`` only those label values count as lesion
    (those in ``cold_labels`` as cold ones), otherwise every positive label is a hot lesion.
    """

    name: str
    target: Path
    low: dict[float, Path]
    ct: Path | None = None
    mask: Path | None = None
    mask_labels: tuple[int, ...] | None = None
    cold_labels: tuple[int, ...] = ()


def find_cases(folder: str | Path) -> list[TrainingCase]:
    """Return the cases of a dataset folder (``manifest.json``) or of a folder of user pairs.

    Raises
    ------
    InputError
        If the folder holds neither layout or a case lacks its low- or full-count file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Training data folder '{folder}' does not exist.")
    manifest = folder / "manifest.json"
    cases = _cases_from_manifest(folder, manifest) if manifest.exists() else _cases_from_pairs(folder)
    if not cases:
        raise InputError(
            f"No training pairs found in '{folder}': expected manifest.json or sub-folders with low.* and full.*."
        )
    return cases


def _cases_from_manifest(folder: Path, manifest: Path) -> list[TrainingCase]:
    try:
        entries = json.loads(manifest.read_text(encoding="utf-8"))["cases"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"The dataset manifest '{manifest}' cannot be read ({error}).") from None
    cases = []
    for entry in entries:
        cases.append(
            TrainingCase(
                name=entry["id"],
                target=folder / (entry["target"] if "target" in entry else entry["full"]),
                low={float(fraction): folder / path for fraction, path in entry["low"].items()},
                ct=folder / entry["ct"] if entry.get("ct") else None,
                mask=folder / entry["labels"] if entry.get("labels") else None,
                mask_labels=lesion_labels(entry["label_names"]) if "label_names" in entry else None,
                cold_labels=cold_labels(entry["label_names"]) if "label_names" in entry else (),
            )
        )
    return cases


def _find_image(case_folder: Path, stem: str) -> list[Path]:
    return sorted(
        path for path in case_folder.iterdir()
        if path.name.startswith(stem) and any(path.name.lower().endswith(s) for s in IMAGE_SUFFIXES)
    )


def _cases_from_pairs(folder: Path) -> list[TrainingCase]:
    cases = []
    for case_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
        lows, fulls = _find_image(case_folder, "low"), _find_image(case_folder, "full")
        if not lows and not fulls:
            continue
        if not lows or len(fulls) != 1:
            raise InputError(f"Case '{case_folder}' needs one or more low.* files and exactly one full.* file.")
        cts, masks = _find_image(case_folder, "ct"), _find_image(case_folder, "mask")
        cases.append(
            TrainingCase(
                name=case_folder.name,
                target=fulls[0],
                low={float(index): path for index, path in enumerate(lows)},
                ct=cts[0] if cts else None,
                mask=masks[0] if masks else None,
            )
        )
    return cases


@dataclasses.dataclass
class LoadedCase:
    """A case's arrays ([z, y, x]; float32 in image units, CT already through ``normalise_ct``; ``mask`` int8 with
    HOT/COLD lesion voxels; ``lesion_voxels`` their indices [n, 3])."""

    target: np.ndarray
    low: list[np.ndarray]
    ct: np.ndarray | None
    mask: np.ndarray | None
    body: np.ndarray
    lesion_voxels: np.ndarray


def load_case(case: TrainingCase, needs_ct: bool) -> LoadedCase:
    """Read a case's volumes, resampling CT and mask onto the full-count grid when their geometry differs."""
    full_image = read_volume(case.target)
    lows = []
    for path in case.low.values():
        low_image = read_volume(path)
        if not same_geometry(low_image, full_image):
            raise InputError(f"Low-count '{path}' and target '{case.target}' do not share one voxel grid.")
        lows.append(np.clip(image_to_array(low_image), 0, None))
    ct = None
    if needs_ct:
        if case.ct is None:
            raise InputError(f"The model needs CT but case '{case.name}' has none.")
        ct = normalise_ct(image_to_array(resample_to_reference(read_volume(case.ct), full_image)))
    mask = None
    if case.mask is not None:
        mask_image = sitk.Cast(read_volume(case.mask), sitk.sitkInt16)
        if not same_geometry(mask_image, full_image):
            mask_image = resample_to_reference(mask_image, full_image, default_value=0.0,
                                               interpolator=sitk.sitkNearestNeighbor, moving_name="mask",
                                               reference_name="full-count image")
        labels = sitk.GetArrayFromImage(mask_image)
        lesion = np.isin(labels, case.mask_labels) if case.mask_labels is not None else labels > 0
        mask = np.where(np.isin(labels, case.cold_labels) & lesion, COLD, np.where(lesion, HOT, 0)).astype(np.int8)
    target = np.clip(image_to_array(full_image), 0, None)
    lesion_voxels = np.argwhere(mask > 0) if mask is not None else np.zeros((0, 3), dtype=np.int64)
    return LoadedCase(target=target, low=lows, ct=ct, mask=mask, body=body_mask(target), lesion_voxels=lesion_voxels)


class CaseCache:
    """Keeps the most recently used loaded cases in memory (bounded by ``capacity``)."""

    def __init__(self, cases: list[TrainingCase], needs_ct: bool, capacity: int = 64) -> None:
        self.cases = cases
        self.needs_ct = needs_ct
        self.capacity = capacity
        self._loaded: OrderedDict[int, LoadedCase] = OrderedDict()

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> LoadedCase:
        if index in self._loaded:
            self._loaded.move_to_end(index)
            return self._loaded[index]
        loaded = load_case(self.cases[index], self.needs_ct)
        self._loaded[index] = loaded
        if len(self._loaded) > self.capacity:
            self._loaded.popitem(last=False)
        return loaded


@dataclasses.dataclass
class Batch:
    """Network inputs [B, C, ...], targets [B, 1, ...] and attention masks [B, 1, ...] (float32 numpy)."""

    inputs: np.ndarray
    targets: np.ndarray
    masks: np.ndarray


class PatchSampler:
    """Draws random, augmented training samples shaped as the model's inference feeds it.

    Slice models get 2.5D stacks cropped to ``patch`` = [y, x]; patch models get 3D windows ``patch`` = [z, y, x].
    Augmentation: in-plane flips and 90° rotations, and the intensity scale multiplied by a factor log-uniform in
    ``scale_range`` (input and target alike), so the network learns f(k·x) ≈ k·f(x) and tolerates normalisation
    differences between scanners. Windows are centred on a lesion voxel with probability ``lesion_fraction``
    (when the case has lesions), otherwise on a random body voxel.
    """

    def __init__(self, cache: CaseCache, config: ModelConfig, patch: tuple[int, ...], seed: int,
                 scale_range: tuple[float, float] = (0.9, 1.1), lesion_fraction: float = 0.0) -> None:
        expected = 2 if config.sampling == "slices" else 3
        if len(patch) != expected:
            raise ValueError(f"patch must have {expected} sizes for sampling {config.sampling!r}")
        self.cache = cache
        self.config = config
        self.patch = tuple(int(p) for p in patch)
        self.rng = np.random.default_rng(seed)
        self.log_scale_range = (float(np.log(scale_range[0])), float(np.log(scale_range[1])))
        self.lesion_fraction = float(lesion_fraction)
        self._scales: dict[tuple[int, int], float] = {}

    def batch(self, size: int) -> Batch:
        """Return ``size`` samples from randomly chosen cases."""
        samples = [self.sample(int(self.rng.integers(len(self.cache)))) for _ in range(size)]
        return Batch(*(np.stack([s[i] for s in samples]) for i in range(3)))

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (input [C, ...], target [1, ...], mask [1, ...]) from case ``index``."""
        case = self.cache[index]
        which = int(self.rng.integers(len(case.low)))
        low = case.low[which]
        if (index, which) not in self._scales:  # the body mask behind the scale costs more than the sample
            self._scales[index, which] = intensity_scale(low, self.config.normalisation)
        scale = self._scales[index, which] * float(np.exp(self.rng.uniform(*self.log_scale_range)))
        volumes = [low] + ([case.ct] if self.config.needs_ct else [])
        mask = case.mask if case.mask is not None else np.zeros(case.target.shape, dtype=np.int8)
        if len(case.lesion_voxels) and self.rng.random() < self.lesion_fraction:
            centre = tuple(int(v) for v in case.lesion_voxels[self.rng.integers(len(case.lesion_voxels))])
        else:
            centre = self._body_voxel(case.body)
        # Cut the window first and scale only it: whole-volume arithmetic per sample would dominate training.
        if self.config.sampling == "slices":
            z = centre[0]
            inputs = stack_slices(volumes, [z], self.config.context_slices)[0]
            inputs, target, mask = (self._crop(a, centre[1:], self.patch)
                                    for a in (inputs, case.target[z][None], mask[z][None]))
        else:
            inputs, target, mask = (self._crop(a, centre, self.patch)
                                    for a in (np.stack(volumes), case.target[None], mask[None]))
        spect_channels = 2 * self.config.context_slices + 1 if self.config.sampling == "slices" else 1
        inputs[:spect_channels] /= scale
        return self._augment(inputs, target / scale, mask.astype(np.float32))

    def _body_voxel(self, body: np.ndarray) -> tuple[int, ...]:
        for _ in range(20):
            point = tuple(int(self.rng.integers(n)) for n in body.shape)
            if body[point]:
                return point
        return tuple(n // 2 for n in body.shape)

    def _crop(self, array: np.ndarray, centre: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
        """Copy a ``size`` window of [C, *spatial] around ``centre``, kept inside the volume where it fits and
        padded with edge values along axes where the volume is smaller than the window."""
        spatial = array.shape[1:]
        starts = [min(max(0, c - s // 2), max(0, n - s)) for c, s, n in zip(centre, size, spatial)]
        window = array[(slice(None),) + tuple(slice(a, a + s) for a, s in zip(starts, size))]
        short = [s - w for s, w in zip(size, window.shape[1:])]
        if any(short):
            window = np.pad(window, [(0, 0)] + [(d // 2, d - d // 2) for d in short], mode="edge")
        return np.array(window, dtype=np.float32)

    def _augment(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        axes = (-2, -1)
        square = self.patch[-1] == self.patch[-2]
        turns = int(self.rng.integers(4)) if square else 2 * int(self.rng.integers(2))
        flip = bool(self.rng.integers(2))
        out = []
        for array in arrays:
            array = np.rot90(array, turns, axes=axes)
            if flip:
                array = array[..., ::-1]
            out.append(np.ascontiguousarray(array, dtype=np.float32))
        return tuple(out)

"""Expected gain of fine-tuning on a user's own scanner (issue 14, item 5), measured along the user's path.

The script plays a user whose camera our training data never saw. **The scanner** is the benchmark's
``lu177-penetration`` protocol (:data:`cases.OOD_VARIANTS`): Lu-177 torso SPECT/CT with a medium-energy
collimator whose response has a 25 % septal-penetration tail that no reconstruction here models (the training
data cover at most 15 %). Of the out-of-distribution protocols it is the one closest to the user workflow:

* what is unusual is a property of the *camera* (collimator and isotope), not of a reconstruction setting, so it
  is in the projections, and the user's path (projections → ``spectdenoise simulate`` → pairs → ``finetune``)
  carries it into both the pairs and the scans to denoise, as it would for a real camera;
* Lu-177 torso SPECT/CT is where issue 14 saw the default model move the numbers on real scans;
* it runs through our own projector, so the projections are exact NM files for ``simulate`` (the independent
  simulator, ``ood-pytomography``, reconstructs with PyTomography and writes no projections in our convention).

Steps (each timed: wall and CPU seconds of this process and of its children, load average before and after):

1. **Pairs** (``--studies`` K phantoms, validation seeds 8 002 000 + k): the scanner's expected projections
   (:class:`SPECTDenoiseLib.simulate.ScanSimulator`), one Poisson draw, written as a DICOM NM TOMO file
   (:func:`write_projections`: one detector, clockwise from the anterior) with the CT beside it; then the real
   ``spectdenoise simulate PROJECTIONS.dcm --ct ct.nii.gz --collimator Lu177-MEGP --fraction F --full-output``
   makes ``PAIRS/<case>/low.nii.gz`` and ``full.nii.gz`` (with ``ct.nii.gz``), the layout ``finetune`` reads.
2. **Fine-tuning**: the real ``spectdenoise finetune --model spect-unet25d --data PAIRS -o MODEL --steps N``
   (its defaults otherwise: the full-count scan is the target, one case held out for validation).
3. **Held-out studies** (``--held-out`` M phantoms, benchmark seeds 9 002 000 + m, ``--draws`` noise draws each,
   draw d from ``numpy.random.default_rng([seed, d])`` as in :class:`cases.CaseScans`): each draw goes through the
   same ``simulate`` command; the **noise-free reference** is the expected projections (× 1000, so rounding to
   counts is negligible) reconstructed by the same library function ``simulate`` calls
   (:func:`SPECTDenoiseLib.projections.thin_and_reconstruct`, same μ-map, ÷ 1000). The input, ``spect-unet25d``
   as shipped and the fine-tuned model (both with the uptake guard, as every front end) are scored per draw with
   the quality benchmark's record (:func:`quality.draw_entry`: NRMSE, PSNR, SSIM in the body against the noise-free
   reconstruction and the full-count scan; lesion means).

Seeds: cases.py uses 8 000 000 + i and 8 001 000 + j (validation), 9 000 000 + i and 9 001 000 + j (benchmark);
here the offset is 2000, so no phantom is shared with either.

The result (``benchmarks/results/finetune_gain.json``, written atomically) holds every condition, the per-draw
entries and a summary per method: NRMSE means with two-stage bootstrap 95 % intervals (studies, then draws),
the fine-tuned model's NRMSE reduction against the shipped one (paired per draw), and the hot-lesion mean bias
(mean over hot lesions ≥ 8 voxels of the region mean's % difference from the noise-free reconstruction's).

Usage::

    nice -n 15 python benchmarks/finetune_gain.py [--studies 8 --held-out 4 --draws 3 --steps 300]
    python benchmarks/finetune_gain.py --quick --work /tmp/ft   # tiny sizes (tests); not a measurement
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cases  # noqa: E402
from methods import ModelUnderTest, load_models  # noqa: E402
from quality import draw_entry, model_fingerprint  # noqa: E402
from stats import bootstrap_ci, ct_body, relative_errors  # noqa: E402

from SPECTDenoiseLib.dataset import SEED_STRIDE  # noqa: E402
from SPECTDenoiseLib.io import array_to_image, atomic_output  # noqa: E402
from SPECTDenoiseLib.phantoms import Phantom  # noqa: E402
from SPECTDenoiseLib.projections import (  # noqa: E402
    projection_geometry,
    read_nm_projections,
    thin_and_reconstruct,
)
from SPECTDenoiseLib.records import strict_json  # noqa: E402
from SPECTDenoiseLib.simulate import ScanSimulator  # noqa: E402

VARIANT = "lu177-penetration"
SEED_OFFSET = 2000
"""Case seeds run seed × 1 000 000 + 2000 + index: beside cases.py's 0 + i and 1000 + j."""
START_MODEL = "spect-unet25d"
FINE_TUNED = "fine-tuned"
INPUT = "input"
TEXTURE, EXTRA_LESIONS = 0.15, 4
"""Textured uptake and added hot lesions of every study (as the training data's patients; plain OOD cases have
none), so that each held-out study has hot lesions to measure."""
REFERENCE_SCALE = 1000.0
RESULT = REPOSITORY / "benchmarks" / "results" / "finetune_gain.json"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much is simulated and trained: K pair studies, M held-out studies × draws, fine-tuning steps, the
    count fraction of the low-count scans, the voxel size and number of views (None: the scanner's) and OSEM
    settings."""

    studies: int = 8
    held_out: int = 4
    draws: int = 3
    steps: int = 300
    fraction: float = 0.1
    voxel_mm: float | None = None
    angles: int | None = None
    iterations: int = 4
    subsets: int = 8


QUICK = Sizes(studies=2, held_out=1, draws=1, steps=2, voxel_mm=6.8, angles=32, iterations=1, subsets=4)


@functools.cache
def scanner() -> cases.Case:
    """The benchmark's :data:`VARIANT` case: the scanner's collimator, voxel size and protocol."""
    return cases.ood_cases((VARIANT,))[0]


def scanner_case(run_seed: int, index: int, sizes: Sizes) -> cases.Case:
    """Study ``index`` of the user's scanner (the :data:`VARIANT` protocol) for ``run_seed``'s seed range."""
    base = scanner()
    seed = run_seed * SEED_STRIDE + SEED_OFFSET + index
    protocol = dataclasses.replace(base.protocol, iterations=sizes.iterations, subsets=sizes.subsets,
                                   angles=sizes.angles or base.protocol.angles)
    return dataclasses.replace(base, name=f"{VARIANT}-{seed}", seed=seed, protocol=protocol, texture=TEXTURE,
                               extra_lesions=EXTRA_LESIONS, voxel_mm=sizes.voxel_mm or base.voxel_mm)


def write_projections(path: Path, counts: np.ndarray, angles_deg: np.ndarray, spacing_mm: tuple[float, float],
                      orbit_radius_mm: float) -> None:
    """Write projections [angle, z, u] (our projector's θ, z towards the head) as a one-detector NM TOMO file.

    Our θ runs clockwise from the anterior, DICOM's φ counter-clockwise (:mod:`SPECTDenoiseLib.projections`), so
    φ = −θ: a clockwise (CW) rotation from ``−θ₀``; rows run from the head down (z flipped), columns are kept.
    ``spacing_mm`` is (row, column); counts are rounded to uint16 (refused above 65 535).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = np.rint(np.asarray(counts)[:, ::-1, :])
    if frames.min() < 0 or frames.max() > np.iinfo(np.uint16).max:
        raise ValueError("Projection counts must lie in 0 … 65 535 to be stored as uint16.")
    steps = np.diff(angles_deg)
    if len(angles_deg) < 2 or not np.allclose(steps, steps[0]) or steps[0] <= 0:
        raise ValueError("The views must be evenly spaced with increasing angle.")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.20"  # NM Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ImageType = "NM", ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [float(s) for s in spacing_mm]
    ds.FrameIncrementPointer = [0x00540090]  # Angular View Vector
    ds.AngularViewVector = list(range(1, frames.shape[0] + 1))
    rotation = Dataset()
    rotation.StartAngle = float(-angles_deg[0] % 360.0)
    rotation.AngularStep, rotation.RotationDirection = float(steps[0]), "CW"
    rotation.NumberOfFramesInRotation, rotation.ScanArc = frames.shape[0], float(steps[0] * frames.shape[0])
    ds.RotationInformationSequence = [rotation]
    detector = Dataset()
    detector.RadialPosition = [float(orbit_radius_mm)] * frames.shape[0]
    ds.DetectorInformationSequence = [detector]
    ds.PixelData = frames.astype(np.uint16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


@dataclasses.dataclass
class Study:
    """One phantom scanned by the scanner: its case, phantom, simulator and the files made for it."""

    case: cases.Case
    phantom: Phantom
    scanner: ScanSimulator

    @classmethod
    def make(cls, case: cases.Case) -> Study:
        """Set up the case's phantom and the scanner's expected projections."""
        phantom = cases.case_phantom(case)
        return cls(case, phantom, ScanSimulator(phantom.activity, phantom.spacing_mm, phantom.mu_map,
                                                case.collimator, case.protocol))

    def view_angles(self) -> np.ndarray:
        """The scanner's camera angles θ (degrees) in the order of its projections."""
        protocol = self.case.protocol
        return protocol.start_deg + np.linspace(0.0, protocol.arc_deg, protocol.angles, endpoint=False)

    def projections(self, path: Path, counts: torch.Tensor) -> None:
        """Write ``counts`` [angle, z, u] of this scanner as an NM file at ``path``."""
        spacing = self.phantom.spacing_mm
        write_projections(path, counts.cpu().numpy(), self.view_angles(), (spacing[0], spacing[2]),
                          self.scanner.orbit_radius_mm)

    def write_ct(self, path: Path, projection_file: Path) -> None:
        """The phantom's CT (HU) on the grid ``simulate`` reconstructs ``projection_file`` on."""
        grid = projection_geometry(read_nm_projections(projection_file))
        sitk.WriteImage(array_to_image(self.phantom.ct.astype(np.float32), grid), str(path))

    def noise_free(self, projection_file: Path) -> np.ndarray:
        """The expected projections reconstructed as ``simulate`` reconstructs ``projection_file`` (same code,
        grid and μ-map; counts × :data:`REFERENCE_SCALE` so rounding to counts is negligible, image ÷ it; the
        Fourier-domain blur's tiny negative values set to 0)."""
        measured = read_nm_projections(projection_file)
        if not np.allclose(measured.angles_deg, self.view_angles() % 360.0):
            raise ValueError(f"'{projection_file}' does not hold this scanner's views in its order.")
        expected = np.clip(self.scanner.expected.cpu().numpy()[:, ::-1, :], 0.0, None) * REFERENCE_SCALE
        full, _, _ = thin_and_reconstruct(dataclasses.replace(measured, counts=expected), (), self.case.collimator,
                                          self.case.protocol.iterations, self.case.protocol.subsets,
                                          mu_map=self.phantom.mu_map)
        return sitk.GetArrayFromImage(full) / REFERENCE_SCALE


def spectdenoise(*arguments: str) -> None:
    """Run the ``spectdenoise`` command line (this Python, one torch thread); raise with its stderr on failure."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run([sys.executable, "-m", "SPECTDenoiseLib", *arguments], capture_output=True, text=True,
                            env=environment, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"spectdenoise {arguments[0]} failed ({result.returncode}): {result.stderr.strip()}")


def simulate_pair_files(study: Study, folder: Path, draw: int, fraction: float) -> Path:
    """Draw ``draw`` of ``study`` as a user makes a pair: projections file → ``spectdenoise simulate`` →
    ``folder/low.nii.gz``, ``full.nii.gz`` and ``ct.nii.gz``; returns the projections file (beside ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    projection_file = folder.parent / f"{folder.name}.projections.dcm"
    rng = np.random.default_rng([study.case.seed, draw])
    study.projections(projection_file, study.scanner.acquire(rng, 1.0).counts)
    study.write_ct(folder / "ct.nii.gz", projection_file)
    protocol = study.case.protocol
    spectdenoise("simulate", str(projection_file), "-o", str(folder / "low.nii.gz"), "--fraction", str(fraction),
                 "--full-output", str(folder / "full.nii.gz"), "--ct", str(folder / "ct.nii.gz"),
                 "--collimator", study.case.collimator, "--seed", str(draw), "--iterations",
                 str(protocol.iterations), "--subsets", str(protocol.subsets), "--threads", "1")
    return projection_file


def read_array(path: Path) -> np.ndarray:
    """A volume file as a float32 array [z, y, x]."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


@contextmanager
def stage(timings: dict, name: str) -> Iterator[None]:
    """Record the wall and CPU seconds (this process and its children) and the load average of a stage."""
    started, load = time.perf_counter(), os.getloadavg()
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    before = [resource.getrusage(w) for w in who]
    yield
    after = [resource.getrusage(w) for w in who]
    cpu = sum(getattr(a, f) - getattr(b, f) for b, a in zip(before, after) for f in ("ru_utime", "ru_stime"))
    timings[name] = {"wall_s": round(time.perf_counter() - started, 1), "cpu_s": round(cpu, 1),
                     "load_before": [round(x, 2) for x in load],
                     "load_after": [round(x, 2) for x in os.getloadavg()]}
    print(f"{name}: {timings[name]['wall_s']:.0f} s wall, {timings[name]['cpu_s']:.0f} s CPU", flush=True)


def make_pairs(pairs: Path, sizes: Sizes) -> list[dict]:
    """Step 1: the K pair studies in ``pairs/<case>/``; returns their descriptions."""
    made = []
    for index in range(sizes.studies):
        study = Study.make(scanner_case(cases.VALIDATION_RUN_SEED, index, sizes))
        simulate_pair_files(study, pairs / study.case.name, 0, sizes.fraction)
        made.append({"case": study.case.record(), "shape": list(study.phantom.activity.shape)})
    return made


def finetune(pairs: Path, output: Path, steps: int) -> None:
    """Step 2: ``spectdenoise finetune --model spect-unet25d --data pairs -o output --steps steps``."""
    spectdenoise("finetune", "--model", START_MODEL, "--data", str(pairs), "-o", str(output),
                 "--steps", str(steps))


def evaluate(work: Path, models: dict[str, ModelUnderTest], sizes: Sizes) -> list[dict]:
    """Step 3: every held-out study and draw, scored for the input and ``models``; one record per study."""
    records = []
    for index in range(sizes.held_out):
        study = Study.make(scanner_case(cases.BENCHMARK_RUN_SEED, index, sizes))
        phantom = study.phantom
        regions, info = cases.lesion_regions(phantom)
        _, background = cases.background_region(phantom)
        body = ct_body(phantom.ct)
        record = {"case": study.case.record(), "shape": list(phantom.activity.shape), "regions": info,
                  "methods": {name: [] for name in (INPUT, *models)}}
        for draw in range(sizes.draws):
            folder = work / "held-out" / f"{study.case.name}-draw{draw}"
            projection_file = simulate_pair_files(study, folder, draw, sizes.fraction)
            if draw == 0:
                noise_free = study.noise_free(projection_file)
                record["noise_free_regions"] = {name: float(noise_free[mask].mean())
                                                for name, mask in regions.items()}
            low, full = read_array(folder / "low.nii.gz"), read_array(folder / "full.nii.gz")
            outputs = {INPUT: low}
            for name, tested in models.items():
                outputs[name] = tested.run(low, phantom.ct, phantom.spacing_mm)[0]
            for name, output in outputs.items():
                record["methods"][name].append({"draw": draw, **draw_entry(output, noise_free, full, body, regions,
                                                                           background)})
        records.append(record)
    return records


def hot_lesion_bias(record: dict, entry: dict) -> float:
    """Mean over the study's hot lesions of the region mean's % difference from the noise-free reconstruction's."""
    hot = [name for name, info in record["regions"].items() if not info["kind"].startswith("cold")]
    return float(np.mean([relative_errors([entry["regions"][name][0]], record["noise_free_regions"][name])[0]
                          for name in hot])) if hot else float("nan")


def summarise(records: list[dict]) -> dict:
    """Per method: NRMSE against the noise-free reconstruction and the full-count scan, hot-lesion mean bias
    (estimates and 95 % intervals over studies × draws); the fine-tuned model's paired NRMSE reduction in %."""
    summary = {}
    for method in records[0]["methods"]:
        groups = {
            "nrmse_vs_noise_free": [[e["vs_noise_free"]["nrmse"] for e in r["methods"][method]] for r in records],
            "nrmse_vs_full": [[e["vs_full"]["nrmse"] for e in r["methods"][method]] for r in records],
            "hot_lesion_bias_pct": [[hot_lesion_bias(r, e) for e in r["methods"][method]] for r in records],
        }
        summary[method] = {key: bootstrap_ci([[v for v in g if np.isfinite(v)] for g in values])
                           for key, values in groups.items() if any(np.isfinite(v) for g in values for v in g)}
    for reference in ("noise_free", "full"):
        key = f"nrmse_vs_{reference}"
        reductions = [[100 * (1 - f[f"vs_{reference}"]["nrmse"] / s[f"vs_{reference}"]["nrmse"])
                       for f, s in zip(r["methods"][FINE_TUNED], r["methods"][START_MODEL])] for r in records]
        summary[f"{key}_reduction_pct_fine_tuned_vs_shipped"] = bootstrap_ci(reductions)
    summary["n"] = {"studies": len(records), "draws_per_study": len(records[0]["methods"][INPUT]),
                    "hot_lesions": sum(1 for r in records for i in r["regions"].values()
                                       if not i["kind"].startswith("cold"))}
    return summary


def run(work: Path, sizes: Sizes, result: Path) -> dict:
    """All three steps in ``work``; writes the result record to ``result`` atomically and returns it."""
    torch.set_num_threads(1)
    timings: dict = {}
    load_start = os.getloadavg()
    with stage(timings, "pairs"):
        pair_studies = make_pairs(work / "pairs", sizes)
    with stage(timings, "finetune"):
        finetune(work / "pairs", work / "model", sizes.steps)
    models = load_models([START_MODEL, f"{FINE_TUNED}={work / 'model'}"])
    with stage(timings, "held_out"):
        records = evaluate(work, models, sizes)
    record = {
        "what": "fine-tuning gain on a scanner the training data never saw, along the user's path "
                "(issue 14 item 5)",
        "scanner": {"variant": VARIANT, "note": scanner().ood, "texture": TEXTURE,
                    "extra_lesions": EXTRA_LESIONS,
                    "reconstruction": "spectdenoise simulate (OSEM-RR, CT μ-map)"},
        "sizes": dataclasses.asdict(sizes),
        "seeds": {"pairs": [s["case"]["seed"] for s in pair_studies],
                  "held_out": [r["case"]["seed"] for r in records],
                  "draw": "numpy.random.default_rng([case seed, draw]); simulate --seed draw"},
        "models": {name: model_fingerprint(tested.model) for name, tested in models.items()},
        "finetune_command": f"spectdenoise finetune --model {START_MODEL} --data PAIRS -o MODEL "
                            f"--steps {sizes.steps}",
        "threads": {"torch": 1, "OMP_NUM_THREADS": 1, "nice": os.nice(0)},
        "machine": {"cpu_cores": os.cpu_count(), "load_start": [round(x, 2) for x in load_start],
                    "load_end": [round(x, 2) for x in os.getloadavg()]},
        "timing": timings,
        "pair_studies": pair_studies,
        "summary": summarise(records),
        "held_out": records,
    }
    result.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(result) as temporary:
        temporary.write_text(strict_json(record, indent=1) + "\n")
    return record


def main() -> None:
    """Command line: sizes, work folder and result path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for tests (not a measurement)")
    parser.add_argument("--studies", type=int, default=Sizes.studies, help="K pair studies for fine-tuning")
    parser.add_argument("--held-out", type=int, default=Sizes.held_out, help="M held-out studies")
    parser.add_argument("--draws", type=int, default=Sizes.draws, help="noise draws per held-out study")
    parser.add_argument("--steps", type=int, default=Sizes.steps, help="fine-tuning steps")
    parser.add_argument("--work", type=Path,
                        help="folder for pairs, model and held-out scans (default: temporary)")
    parser.add_argument("--result", type=Path, help=f"result file (default: {RESULT.relative_to(REPOSITORY)}; "
                                                    "with --quick: WORK/finetune_gain.json)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes(args.studies, args.held_out, args.draws, args.steps)
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        result = args.result or (work / "finetune_gain.json" if args.quick else RESULT)
        summary = run(work, sizes, result)["summary"]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

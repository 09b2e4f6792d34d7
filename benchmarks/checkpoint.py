"""Per-draw checkpoints of a benchmark case, so that a killed run resumes from its last finished noise draw.

A full-mode case can take longer than the machine stays up (an IEC case at four count levels with oracle-tuned
NLM and BM4D: about 5 hours on 2 busy cores), so per-case result files alone would never let it finish.
After every draw :func:`run_case <quality.run_case>` saves what it has gathered — the rows so far, probes,
standard-count ratios, the background ensembles and the time spent — to one ``.npz`` per case (arrays only, read
without pickle), written atomically; a later run of the same case under the same identity (configuration, kept
methods, draws) starts after the last saved draw. Any other identity discards the checkpoint. The draws are
deterministic per (case seed, draw index), so a resumed case gives the same record as an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from stats import VoxelEnsemble

from SPECTDenoiseLib.io import atomic_output

CHECKPOINT_FOLDER = ".partial"
"""Sub-folder of the results folder that holds the checkpoints (git-ignored; removed case by case when done)."""


def checkpoint_path(output_dir: Path, case_name: str) -> Path:
    """Where ``case_name``'s checkpoint lives for results in ``output_dir``."""
    return Path(output_dir) / CHECKPOINT_FOLDER / f"{case_name}.npz"


def save_checkpoint(path: Path, identity: dict, state: dict, ensembles: dict[tuple[str, str], VoxelEnsemble]) -> None:
    """Write ``state`` (JSON-able: draws done, rows, probes, timing …) and the ensembles under ``identity``,
    atomically."""
    arrays = {"state": np.array(json.dumps({"identity": identity, **state}))}
    for index, ((method, key), ensemble) in enumerate(ensembles.items()):
        count, mean, squares = ensemble.arrays()
        arrays[f"ensemble{index}_name"] = np.array(json.dumps([method, key, count]))
        arrays[f"ensemble{index}_mean"], arrays[f"ensemble{index}_squares"] = mean, squares
    path.parent.mkdir(exist_ok=True)
    with atomic_output(path) as temporary, open(temporary, "wb") as stream:  # np.savez adds .npz to a bare name
        np.savez(stream, **arrays)


def load_checkpoint(path: Path, identity: dict) -> tuple[dict, dict[tuple[str, str], VoxelEnsemble]] | None:
    """(state, ensembles) saved at ``path`` under the same ``identity``; None when there is none, it is unreadable
    or it was made under another identity."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            state = json.loads(str(saved["state"]))
            if state.pop("identity") != json.loads(json.dumps(identity)):
                return None
            ensembles = {}
            index = 0
            while f"ensemble{index}_name" in saved:
                method, key, count = json.loads(str(saved[f"ensemble{index}_name"]))
                ensembles[(method, key)] = VoxelEnsemble.from_arrays(
                    count, saved[f"ensemble{index}_mean"], saved[f"ensemble{index}_squares"])
                index += 1
    except (OSError, ValueError, KeyError) as error:
        print(f"{path.name}: checkpoint unreadable ({error}); the case starts again", flush=True)
        return None
    return state, ensembles


def discard_checkpoint(path: Path) -> None:
    """Remove the checkpoint (after the case's record is written, or when it no longer applies)."""
    path.unlink(missing_ok=True)

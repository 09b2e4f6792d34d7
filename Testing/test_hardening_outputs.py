"""Outputs are never destroyed: header formats keep their data file, and cleaning up leftovers of killed runs
never touches a running writer's files (concurrent runs into one folder), files from another computer, or user
files that merely look like partial files.

test_bad_inputs.py shows every read file (reference, CT, hard links, a header's data file) protected from every
output through the CLI; test_worker.py that the leftover of a SIGKILLed writer is removed by the next run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPOSITORY

from SPECTDenoiseLib.io import (
    PARTIAL_PREFIX,
    image_to_array,
    partial_folder,
    read_volume,
    remove_partial_outputs,
    write_volume,
)


@pytest.mark.parametrize(("suffix", "data_file"), [(".mhd", "denoised.zraw"), (".nhdr", "denoised.raw.gz")])
def test_a_header_output_keeps_its_data_file_through_the_next_runs_cleanup(make_image, tmp_path, suffix, data_file):
    image = make_image()
    path = write_volume(image, tmp_path / f"denoised{suffix}")
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, data_file])
    remove_partial_outputs(tmp_path)  # what the next run into this folder does first
    np.testing.assert_array_equal(image_to_array(read_volume(path)), image_to_array(image))


def _start_writer(destination: Path) -> subprocess.Popen:
    """A real writer: opens its temporary output, writes half, and waits for a line on stdin to finish."""
    script = ("import sys; from SPECTDenoiseLib.io import atomic_output\n"
              "with atomic_output(sys.argv[1]) as partial:\n"
              "    with open(partial, 'w') as handle:\n"
              "        handle.write('first half '); handle.flush(); print(partial, flush=True)\n"
              "        sys.stdin.readline(); handle.write('second half')\n")
    return subprocess.Popen([sys.executable, "-c", script, str(destination)], cwd=REPOSITORY, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_cleanup_by_a_concurrent_run_keeps_a_running_writers_files(tmp_path):
    writer = _start_writer(tmp_path / "result.txt")
    partial = Path(writer.stdout.readline().strip())
    assert remove_partial_outputs(tmp_path) == []  # another run starting in the same folder
    assert partial.exists()
    _, errors = writer.communicate("go\n", timeout=60)
    assert writer.returncode == 0, errors
    assert (tmp_path / "result.txt").read_text() == "first half second half"
    assert os.listdir(tmp_path) == ["result.txt"]


def test_cleanup_removes_only_leftovers_of_dead_processes_on_this_computer(tmp_path):
    subprocess.run([sys.executable, "-c", "import sys; from SPECTDenoiseLib.io import partial_folder\n"
                    "folder = partial_folder(sys.argv[1]); (folder / 'half.nrrd').write_text('x')",
                    str(tmp_path)], cwd=REPOSITORY, check=True)  # exits without cleaning up, like a killed run
    abandoned = list(tmp_path.iterdir())
    running = partial_folder(tmp_path)  # this process is alive
    keep = {running.name, f"{PARTIAL_PREFIX}user-notes", f"{PARTIAL_PREFIX}0badc0de-1-elsewhere",
            f"{PARTIAL_PREFIX}file.nrrd"}
    (tmp_path / f"{PARTIAL_PREFIX}user-notes").mkdir()  # a folder named like a partial file
    (tmp_path / f"{PARTIAL_PREFIX}user-notes" / "notes.txt").write_text("mine")
    (tmp_path / f"{PARTIAL_PREFIX}0badc0de-1-elsewhere").mkdir()  # another computer's run (shared folder)
    (tmp_path / f"{PARTIAL_PREFIX}file.nrrd").write_text("an old-style or user file")
    assert remove_partial_outputs(tmp_path) == abandoned
    assert {entry.name for entry in tmp_path.iterdir()} == keep

"""The benchmark's disk cache of simulated scans (benchmarks/draw_cache.py): what it gives back is what the
simulator gives, a later run reads it without setting up the simulator, and any change to what decides the images
gives another entry."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from cases import Case, CaseScans, case_phantom  # noqa: E402
from draw_cache import DrawCache, simulator_fingerprint  # noqa: E402

from SPECTDenoiseLib.simulate import ScanProtocol  # noqa: E402

CASE = Case("iec-tiny", "iec", 8000001, "Tc99m-LEHR", 12.0,
            ScanProtocol(total_counts=2e6, angles=24, iterations=2, subsets=4))
FRACTIONS = (0.1, 0.25)


def test_cached_scans_are_the_simulated_ones_and_a_later_run_reads_them_without_the_simulator(tmp_path):
    phantom = case_phantom(CASE)
    plain = CaseScans(CASE, phantom, FRACTIONS, 2)
    first = CaseScans(CASE, phantom, FRACTIONS, 2, cache=DrawCache(tmp_path, CASE.record(), FRACTIONS))
    draws = [first.draw(index) for index in range(2)]
    again = CaseScans(CASE, phantom, FRACTIONS, 2, cache=DrawCache(tmp_path, CASE.record(), FRACTIONS))
    reread = [again.draw(index) for index in range(2)]
    assert again._scanner is None  # nothing was simulated: every image came from the cache
    np.testing.assert_array_equal(again.noise_free, plain.noise_free)
    assert again.settings == plain.settings
    for index in range(2):
        expected = plain.draw(index)
        assert set(reread[index]) == set(expected) == {1.0, *FRACTIONS}
        for fraction, image in expected.items():
            np.testing.assert_array_equal(draws[index][fraction], image)
            np.testing.assert_array_equal(reread[index][fraction], image)
            assert reread[index][fraction].dtype == image.dtype
    assert not np.array_equal(reread[0][0.1], reread[1][0.1])


def test_a_draw_not_yet_cached_is_simulated_and_added(tmp_path):
    phantom = case_phantom(CASE)
    cache = DrawCache(tmp_path, CASE.record(), FRACTIONS)
    CaseScans(CASE, phantom, FRACTIONS, 1, cache=cache).draw(0)
    assert cache.load_draw(1) is None
    later = CaseScans(CASE, phantom, FRACTIONS, 2, cache=cache)
    np.testing.assert_array_equal(later.draw(1)[0.25], CaseScans(CASE, phantom, FRACTIONS, 2).draw(1)[0.25])
    assert cache.load_draw(1) is not None


def test_another_protocol_fraction_set_or_simulator_code_names_another_entry(tmp_path):
    base = DrawCache(tmp_path, CASE.record(), FRACTIONS, fingerprint="a").folder
    longer = dataclasses.replace(CASE, protocol=dataclasses.replace(CASE.protocol, iterations=3))
    assert DrawCache(tmp_path, longer.record(), FRACTIONS, fingerprint="a").folder != base
    assert DrawCache(tmp_path, CASE.record(), (0.1,), fingerprint="a").folder != base
    assert DrawCache(tmp_path, CASE.record(), FRACTIONS, fingerprint="b").folder != base
    assert DrawCache(tmp_path, CASE.record(), FRACTIONS, fingerprint="a").folder == base


def test_the_simulator_fingerprint_follows_the_simulator_sources(tmp_path):
    for source in ("SPECTDenoiseLib/simulation", "benchmarks"):
        (tmp_path / source).mkdir(parents=True)
    (tmp_path / "SPECTDenoiseLib/simulation/osem.py").write_text("ITERATIONS = 4\n")
    for name in ("simulate.py", "dataset.py"):
        (tmp_path / "SPECTDenoiseLib" / name).write_text("")
    (tmp_path / "SPECTDenoiseLib/phantoms").mkdir()
    for name in ("cases.py", "independent_simulator.py"):
        (tmp_path / "benchmarks" / name).write_text("")
    before = simulator_fingerprint(tmp_path)
    assert simulator_fingerprint(tmp_path) == before
    (tmp_path / "SPECTDenoiseLib/simulation/osem.py").write_text("ITERATIONS = 5\n")
    assert simulator_fingerprint(tmp_path) != before

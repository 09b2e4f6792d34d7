"""Worker requests: every malformed request file gives exactly one JSON ``error`` event and its exit code.

Wrong field types, out-of-range or huge numbers, NUL bytes, deep nesting, over-long integer literals and oversized
files are refused before any model or volume is touched (exit code 3, ``InputError``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPOSITORY

from SPECTDenoiseLib import worker
from SPECTDenoiseLib.errors import InputError

GOOD = {"input": "in.nrrd", "output": "out.nrrd"}


def _serve_file(tmp_path: Path, text: str, capsys) -> tuple[int, list[dict]]:
    path = tmp_path / "request.json"
    path.write_text(text, encoding="utf-8")
    code = worker.main([str(path)])
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines]


BAD_FIELDS = [
    ({"input": 5}, "'input' must be a file path"),
    ({"input": ["a"]}, "'input' must be a file path"),
    ({"output": ""}, "'output' must be a file path"),
    ({"output": "a\x00b.nrrd"}, "'output' must be a file path"),
    ({"ct": {"path": "ct.nrrd"}}, "'ct' must be a file path"),
    ({"difference": "x" * 5000}, "'difference' must be a file path"),
    ({"variance": True}, "'variance' must be a file path"),
    ({"model": 3}, "'model' must be text"),
    ({"model": "org/name\x00"}, "'model' must be text"),
    ({"model": ""}, "'model' must be text"),
    ({"device": ["cpu"]}, "'device' must be text"),
    ({"device": "c" * 40}, "'device' must be text"),
    ({"samples": "4"}, "'samples' must be a whole number from 1 to 1000"),
    ({"samples": 4.0}, "'samples' must be a whole number"),
    ({"samples": True}, "'samples' must be a whole number"),
    ({"samples": 0}, "'samples' must be a whole number"),
    ({"steps": -1}, "'steps' must be a whole number from 1 to 10000"),
    ({"steps": 10**30}, "'steps' must be a whole number"),
    ({"seed": -5}, "'seed' must be a whole number from 0 to"),
    ({"seed": 2**64}, "'seed' must be a whole number"),
    ({"threads": 0}, "'threads' must be a whole number from 1 to 4096"),
    ({"threads": [1]}, "'threads' must be a whole number"),
    ({"uptake_guard": "no"}, "'uptake_guard' must be true or false"),
    ({"uptake_guard": 0}, "'uptake_guard' must be true or false"),
    ({"extra": 1}, "unknown keys ['extra']"),
]


@pytest.mark.parametrize(("change", "message"), BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_a_field_of_the_wrong_type_or_range_is_one_error_event(tmp_path, capsys, change, message):
    code, events = _serve_file(tmp_path, json.dumps({**GOOD, **change}), capsys)
    assert code == InputError.exit_code
    assert len(events) == 1 and events[0]["event"] == "error" and events[0]["exit_code"] == InputError.exit_code
    assert message in events[0]["message"]


BAD_FILES = [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"input": "a", "output": "b", "seed": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"input": "a", "output": ', "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"just text"', "must be a JSON object"),
    ('{"input": null, "output": "b"}', "must name an 'input' and an 'output'"),
    ('{"input": "a", "output": "b", "samples": NaN}', "'samples' must be a whole number"),
    ('{"input": "a", "output": "b", "padding": "' + "x" * (2 << 20) + '"}', "larger than"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES, ids=[m for _, m in BAD_FILES])
def test_a_malformed_request_file_is_one_error_event(tmp_path, capsys, text, message):
    code, events = _serve_file(tmp_path, text, capsys)
    assert code == InputError.exit_code
    assert len(events) == 1 and events[0]["event"] == "error" and message in events[0]["message"]


def test_invalid_utf8_is_one_error_event(tmp_path, capsys):
    path = tmp_path / "request.json"
    path.write_bytes(b'{"input": "\xff\xfe", "output": "b"}')
    assert worker.main([str(path)]) == InputError.exit_code
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(events) == 1 and "not valid JSON" in events[0]["message"]


def test_a_request_path_with_a_nul_byte_is_one_error_event(capsys):
    assert worker.main(["request\x00.json"]) == InputError.exit_code
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(events) == 1 and "Cannot read the worker request" in events[0]["message"]


def test_the_worker_process_reports_a_bad_request_on_stdout_without_a_traceback(tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps({**GOOD, "samples": {"nested": [[[1]]]}}), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "SPECTDenoiseLib.worker", str(path)], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == InputError.exit_code
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == ["error"]
    assert "Traceback" not in done.stderr


def test_a_request_built_in_code_is_checked_the_same_way():
    with pytest.raises(InputError, match="'seed' must be a whole number"):
        worker.Request(input="a.nrrd", output="b.nrrd", seed=-1)
    request = worker.Request(input="a.nrrd", output=Path("b.nrrd"), samples=3)
    assert request.input == Path("a.nrrd") and worker.Request.from_dict(request.to_dict()) == request


def test_a_written_request_reads_back_equal(tmp_path):
    request = worker.Request(input=tmp_path / "a.nrrd", output=tmp_path / "b.nrrd", ct=tmp_path / "ct.nrrd",
                             model="org/name@abc", device="cpu", samples=4, steps=10, seed=7, threads=2,
                             uptake_guard=False)
    assert worker.Request.from_dict(json.loads(request.write(tmp_path / "r.json").read_text())) == request

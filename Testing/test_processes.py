"""The one launcher of background commands (SPECTDenoiseLib.processes), with real child processes."""

from __future__ import annotations

import os
import signal
import sys
import time

from SPECTDenoiseLib import processes
from SPECTDenoiseLib.processes import JsonLinesProcess, failure_message, library_environment, popen_options


def test_on_windows_a_child_gets_its_own_process_group_and_no_console_window():
    assert popen_options("win32") == {"creationflags": 0x00000200 | 0x08000000}
    assert popen_options("linux") == {"start_new_session": True}


def test_each_stdout_line_becomes_an_event_and_follow_returns_the_exit_code(tmp_path):
    script = ("import json, sys\nprint(json.dumps({'event': 'progress', 'fraction': 0.5}))\nprint('plain text')\n"
              "print('[1, 2]')\nprint('{' * 50000)\nprint('oops', file=sys.stderr)\nsys.exit(3)\n")
    process = JsonLinesProcess([sys.executable, "-c", script], tmp_path / "stderr.log")
    events = []
    assert process.follow(events.append) == 3
    assert events[0] == {"event": "progress", "fraction": 0.5}
    assert [e["event"] for e in events[1:]] == ["log", "log", "log"] and events[1]["message"] == "plain text"
    assert process.stderr_tail() == "oops"


def test_the_child_runs_in_its_own_session_and_finds_this_library(tmp_path):
    script = ("import os, json, SPECTDenoiseLib\n"
              "print(json.dumps({'session': os.getsid(0), 'library': SPECTDenoiseLib.__file__}))")
    process = JsonLinesProcess([sys.executable, "-c", script], cwd=tmp_path, env=library_environment({}))
    events = []
    assert process.follow(events.append) == 0
    assert events[0]["session"] == process.pid != os.getsid(0)
    assert events[0]["library"].startswith(str(processes.LIBRARY_ROOT))


def test_terminate_escalates_to_sigkill_after_the_grace_period(tmp_path):
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
              "time.sleep(60)")
    process = JsonLinesProcess([sys.executable, "-c", script], tmp_path / "stderr.log")
    while not process.events():  # wait for "ready": the handler is in place
        time.sleep(0.02)
    process.terminate(grace_s=0.3)
    assert process.follow(lambda event: None) == -signal.SIGKILL


def test_failure_sentence_prefers_the_error_event_then_the_signal_then_the_last_stderr_line():
    assert failure_message({"event": "error", "message": "The model needs a CT.", "exit_code": 4}, 4) == \
        "The model needs a CT."
    assert failure_message(None, -signal.SIGKILL, "ignored").startswith("The worker was killed by SIGKILL")
    assert failure_message(None, 139, "x\nSegmentation fault") == \
        "The worker stopped unexpectedly (exit code 139): Segmentation fault"
    assert failure_message(None, 1) == "The worker stopped unexpectedly (exit code 1): no error message"

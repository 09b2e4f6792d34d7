"""Wall and CPU time of a benchmark script's run, with the threads and the machine's load around it."""

from __future__ import annotations

import os
import resource
import time


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its ended children (e.g. a process pool after shutdown)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class RunTiming:
    """Wall and CPU time from this object's creation (the process and its ended children), with the threads per
    process and the 1-minute load average before and after."""

    def __init__(self, threads: int) -> None:
        self.threads, self.started, self.load_before = threads, time.perf_counter(), os.getloadavg()
        self.cpu_started = _cpu_seconds()

    def elapsed(self) -> dict:
        """Wall and CPU seconds so far: {"wall_s", "cpu_s"}, unrounded."""
        return {"wall_s": time.perf_counter() - self.started, "cpu_s": _cpu_seconds() - self.cpu_started}

    def finish(self) -> dict:
        """The record's ``timing``: wall_s, cpu_s, threads, cpu_cores, load_before, load_after."""
        return {**{key: round(value, 1) for key, value in self.elapsed().items()},
                "threads": self.threads, "cpu_cores": os.cpu_count(),
                "load_before": [round(x, 2) for x in self.load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()]}

"""Shared helpers for the benchmark scripts: peak-memory sampling, child runs, tables.

Each measured method runs in its own child process (``python <script> --worker ...``) so that
one method's allocations, imports and caches never count against another's. The child samples
its own ``/proc/self/status`` every 10 ms and reports:

* ``peak_private_mib``: the highest ``RssAnon`` (private, anonymous memory: arrays, tensors,
  model weights) minus the value just before the method started. Pages of a memory-mapped input
  file are page cache, not ``RssAnon``, so this leaves out the data's own footprint.
* with ``children=True`` (the encode benchmark, whose DataLoader workers are processes) the
  sum of ``Pss_Anon`` over the process and its children, so copy-on-write pages shared after
  ``fork`` count once.
* ``peak_rss_mib``: ``VmHWM``, i.e. ``getrusage(RUSAGE_SELF).ru_maxrss`` for the whole child,
  including file pages of the memmap it touched and the interpreter with torch (~300 MiB).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import date


def _status_kib(field: str, pid: int | str = "self", file: str = "status") -> int:
    try:
        with open(f"/proc/{pid}/{file}") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # a child that just exited
        pass
    return 0


def _children() -> list[int]:
    try:
        import psutil
    except ImportError:
        return []
    try:
        return [c.pid for c in psutil.Process().children(recursive=True)]
    except Exception:
        return []


class PeakMemory:
    """Samples anonymous RSS in a thread while the ``with`` block runs: this process's, plus
    that of its child processes (DataLoader workers) when ``children=True`` (needs psutil)."""

    def __init__(self, interval: float = 0.01, children: bool = False):
        self.interval = interval
        self.children = children
        self.base_kib = 0
        self.peak_kib = 0
        self._stop = threading.Event()

    def _now(self) -> int:
        if not self.children:
            return _status_kib("RssAnon")
        # Forked workers share their parent's pages copy-on-write: proportional (Pss) counts
        # each shared page once across the processes instead of once per process.
        return sum(_status_kib("Pss_Anon", pid, "smaps_rollup")
                   for pid in ["self", *_children()])

    def __enter__(self) -> "PeakMemory":
        self.base_kib = self.peak_kib = self._now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, self._now())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self._now())

    def report(self) -> dict:
        return {"peak_private_mib": (self.peak_kib - self.base_kib) / 1024,
                "private_before_mib": self.base_kib / 1024,
                "peak_rss_mib": _status_kib("VmHWM") / 1024}


def emit(result: dict) -> None:
    """Print the child's result as the last stdout line (the parent parses it)."""
    print("RESULT " + json.dumps(result), flush=True)


def run_child(args: list[str], timeout: float) -> dict:
    """Run ``python <args>`` and return its RESULT dict, or {"error": ...}."""
    cmd = [sys.executable, *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {proc.returncode}: {tail[0][:200]}"}


def machine() -> str:
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = torch.__version__
    except Exception:  # the parent does not need torch to describe the machine
        gpu, tv = "unknown GPU", "?"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
            f"{mem_gib:.0f} GiB RAM, {gpu}; Python {platform.python_version()}, torch {tv}; "
            f"{date.today().isoformat()}")


def table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def fmt(x, spec: str = ".1f", missing: str = "-") -> str:
    if x is None:
        return missing
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def reproduce(script: str, argv: list[str] | None) -> str:
    """The footer line that re-runs a benchmark with the arguments it was given."""
    import shlex
    cmd = [os.path.basename(sys.executable), f"benchmarks/{script}",
           *(sys.argv[1:] if argv is None else argv)]
    return "reproduce: " + " ".join(shlex.quote(c) for c in cmd)

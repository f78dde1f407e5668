"""What the benchmarks share: where they write their figures (`bench/results/<name>.json`, with the machine they
were measured on), and how they run `selfexplore` commands."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from selfexplore.io import write_json
from selfexplore.train.worker import hardware

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]


def write_report(report: dict, name: str, out: str | Path = "") -> Path:
    """Write `report` plus the machine (CPUs, what a training worker here computes on, platform, load average now)
    to `out`, or to `RESULTS/<name>.json`: trained models, and so accuracies, differ between machines."""
    machine = {
        "cpus": os.cpu_count(),
        "hardware": hardware(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_after": os.getloadavg()[0],
    }
    path = Path(out or RESULTS / f"{name}.json")
    write_json(path, {**report, "machine": machine})
    print(f"wrote {path}")
    return path


def selfexplore(*args: str, bench: str) -> None:
    """`selfexplore ARGS` in a subprocess from the repository root, one thread per process; on failure, exit with
    its stderr's tail, naming the benchmark."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "selfexplore.cli", *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/{bench}.py: `selfexplore {' '.join(args[:2])}` failed (exit {done.returncode}):\n{done.stderr[-3000:]}")

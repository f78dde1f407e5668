"""Where every benchmark writes its figures: `bench/results/<name>.json`, with the machine they were measured on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from selfexplore.io import write_json

RESULTS = Path(__file__).parent / "results"


def write_report(report: dict, name: str, out: str | Path = "") -> Path:
    """Write `report` plus the machine (CPUs, platform, load average now) to `out`, or to `RESULTS/<name>.json`."""
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(), "load_avg_after": os.getloadavg()[0]}
    path = Path(out or RESULTS / f"{name}.json")
    write_json(path, {**report, "machine": machine})
    print(f"wrote {path}")
    return path

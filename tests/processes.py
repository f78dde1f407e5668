"""Finding the processes of one `selfexplore` subprocess that a kill test started in a session of its own.

Ray's processes (GCS, raylet, actors, Train workers) keep the session of the driver that started them, so this
finds only that run's, never those of another run on the same machine, and still finds them once they are orphans.
"""

import os

import psutil


def session_processes(session: int, name: str) -> list[psutil.Process]:
    """Live processes of session `session` whose command line mentions `name` (e.g. `RayTrainWorker`)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if os.getsid(process.pid) == session and any(name in part for part in process.info["cmdline"] or []):
                found.append(process)
        except ProcessLookupError:  # gone meanwhile
            continue
    return found

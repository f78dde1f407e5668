"""`selfexplore submit`: run the pipeline as a Ray job through `JobSubmissionClient`, and follow its logs.

The same as `ray job submit --working-dir . -- python -m jobs.pipeline --config CONFIG key=value ...`. The run
directory is written by the job's driver on the cluster: point `output_dir` at storage every node shares.
"""

from __future__ import annotations

import asyncio
import shlex
import time

from ray.job_submission import JobStatus, JobSubmissionClient

from selfexplore.config import RunConfig

# Never upload these with the working directory: environments, run outputs, VCS metadata.
EXCLUDES = [".venv", "runs", ".git", "__pycache__", "*.egg-info", ".pytest_cache"]


def submit_pipeline(
    config_path: str, overrides: list[str], cfg: RunConfig, address: str, wait: bool = True, python: str = "python", verbose: bool = False
) -> int:
    client = JobSubmissionClient(address)
    command = [python, "-m", "jobs.pipeline", "--config", shlex.quote(config_path), *map(shlex.quote, overrides)]
    entrypoint = " ".join(command + ["--verbose"] * verbose)
    runtime_env = {"working_dir": ".", "excludes": EXCLUDES, "env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}}
    job_id = submit_with_retry(client, entrypoint, runtime_env)
    print(f"submitted job {job_id} to {address} (run `{cfg.name}`, output under {cfg.output_dir})", flush=True)
    if not wait:
        return 0
    asyncio.run(_print_logs(client, job_id))
    status = wait_for_job(client, job_id)
    print(f"job {job_id}: {status}", flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1


def submit_with_retry(client: JobSubmissionClient, entrypoint: str, runtime_env: dict, patience_s: float = 300) -> str:
    """Submit, retrying while the head's job agent is still starting (a fresh cluster answers 500 for a while)."""
    deadline = time.time() + patience_s
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.time() > deadline:
                raise
            time.sleep(2)


async def _print_logs(client: JobSubmissionClient, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def wait_for_job(client: JobSubmissionClient, job_id: str, timeout_s: float = 7 * 24 * 3600) -> JobStatus:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(1)
    raise TimeoutError(f"job {job_id} still running after {timeout_s:.0f}s")

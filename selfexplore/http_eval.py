"""Evaluation over HTTP: send a test set to any OpenAI-compatible `/v1/completions` endpoint and grade it.

    summary = evaluate_endpoint("http://127.0.0.1:8000", "gsm8k", "data/gsm8k/test.jsonl", "runs/x/eval-http")

Each problem is one greedy request with the training prompt (`question + "\n"`), sent from a bounded pool of
threads; connection failures, 429 and 5xx answers are retried with backoff, any other 4xx stops the run with the
server's message (a wrong key or an over-limit `max_tokens` will not fix itself). Results are graded with the
task's grader and written exactly as the in-cluster `eval` stage writes them: `<out>/<model>.jsonl` (one row per
problem, `selfexplore.stages.eval.result_row`) and `<out>/summary.json` (`{model: summarize(rows)}`, merged with
the summaries already there), so the two paths can be compared file to file.
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import requests.adapters

from selfexplore.config import load_config
from selfexplore.errors import DataError, StageError
from selfexplore.io import read_jsonl, write_json, write_jsonl
from selfexplore.stages.eval import result_row, summarize
from selfexplore.tasks import format_prompt, get_task

REQUEST_TIMEOUT_S = 600.0
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(StageError):
    """The endpoint refused the requests in a way retrying cannot fix; the message carries the server's reason."""


def evaluate_endpoint(
    endpoint: str,
    task: str,
    data_path: str,
    out_dir,
    model: str | None = None,
    concurrency: int = 8,
    max_tokens: int = 512,
    api_key: str | None = None,
    retries: int = 3,
    limit: int = 0,
) -> dict:
    """Evaluate the model behind `endpoint` on `data_path`; returns the summary (also written to disk).

    `endpoint` is the server's base URL, with or without `/v1`. `data_path` is a JSON Lines file of problems
    (`{id, question, answer}`) or a run config YAML (its task's test split, e.g. `configs/tiny.yaml` for arith).
    `model` defaults to the first model the endpoint lists. `api_key` defaults to $SELFEXPLORE_API_KEY.
    `limit` > 0 evaluates only the first `limit` problems.
    """
    task_module = get_task(task)
    problems = load_problems(task, data_path)
    if limit > 0:
        problems = problems[:limit]
    base = api_base(endpoint)
    session = requests.Session()
    # One pooled connection per worker thread (the default pool keeps 10 and drops the rest after each use).
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=max(1, concurrency))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    api_key = api_key or os.environ.get("SELFEXPLORE_API_KEY")  # the variable `selfexplore serve` reads too
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    model = model or list_models(session, base, retries)[0]

    def solve(problem: dict) -> dict:
        body = {
            "model": model,
            "prompt": format_prompt(problem["question"]),
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "n": 1,
        }
        answer = post_with_retries(session, f"{base}/completions", body, retries)
        choice = answer["choices"][0]
        n_tokens = (answer.get("usage") or {}).get("completion_tokens", 0)
        return result_row(problem, choice["text"], n_tokens, choice.get("finish_reason") or "unknown", task_module)

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        rows = list(pool.map(solve, problems))
    summary = summarize(rows)
    out_dir = Path(out_dir)
    write_jsonl(out_dir / f"{file_stem(model)}.jsonl", rows)
    summary_path = out_dir / "summary.json"
    summaries = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summaries[model] = summary
    write_json(summary_path, summaries)
    return summary


def load_problems(task: str, data_path: str) -> list[dict]:
    path = Path(data_path)
    if path.suffix in (".yaml", ".yml"):
        cfg = load_config(path)
        if cfg.task.name != task:
            raise DataError(f"{path} is a run config for task {cfg.task.name!r}, not {task!r}")
        return get_task(task).load("test", cfg.task)
    problems = read_jsonl(path)
    for line_no, problem in enumerate(problems, 1):
        missing = [key for key in ("id", "question", "answer") if key not in problem]
        if missing:
            raise DataError(f"{path}: problem {line_no} lacks {', '.join(missing)} (need id, question, answer)")
    return problems


def api_base(endpoint: str) -> str:
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1") else f"{base}/v1"


def file_stem(model: str) -> str:
    """A file name for a model id (ids such as `org/name` hold characters paths cannot)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model)


def list_models(session: requests.Session, base: str, retries: int) -> list[str]:
    answer = request_with_retries(lambda: session.get(f"{base}/models", timeout=REQUEST_TIMEOUT_S), retries)
    models = [card["id"] for card in answer.get("data", [])]
    if not models:
        raise EndpointError(f"{base}/models lists no model; pass the model name")
    return models


def post_with_retries(session: requests.Session, url: str, body: dict, retries: int) -> dict:
    return request_with_retries(lambda: session.post(url, json=body, timeout=REQUEST_TIMEOUT_S), retries)


def request_with_retries(send, retries: int) -> dict:
    attempt = 0
    while True:
        try:
            response = send()
        except (requests.ConnectionError, requests.Timeout) as e:
            problem = f"endpoint unreachable: {e}"
        else:
            if response.ok:
                return response.json()
            problem = f"{response.url}: HTTP {response.status_code}: {error_message(response)}"
            if response.status_code not in RETRYABLE_STATUS:
                raise EndpointError(problem)
        if attempt == retries:
            raise EndpointError(f"{problem} (gave up after {retries + 1} attempts)")
        time.sleep(min(30.0, 0.5 * 2**attempt))
        attempt += 1


def error_message(response: requests.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:500]

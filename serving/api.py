"""The HTTP API: OpenAI-compatible completions, chat completions and model listing, `/v1/solve`, `/healthz`.

`build_fastapi` returns the ASGI app the ingress deployment serves. It needs only the settings, the model's
tokenizer and context length (for prompt limits and `usage`) and an `EngineClient` that reaches an engine, so
the whole request path — guard, validation, limits, response shapes, engine failures — lives here, apart from
Ray Serve's plumbing.

Two ASGI layers wrap the routes, outermost first:
- `RequestMetrics`: counts requests per route and status and times them (Prometheus, through Ray's metrics).
- `Guard`: API key (or loopback-only clients when there is none) and the body-size limit, before any parsing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray.serve.metrics import Counter, Histogram

from selfexplore.engines import Completion, SamplingParams
from selfexplore.errors import root_cause
from selfexplore.tasks import TASKS, format_prompt, get_task
from serving.engine import Delta
from serving.protocol import ApiError, ChatRequest, CompletionRequest, SamplingFields, SolveRequest, parse_body
from serving.settings import API_KEY_ENV, ServeSettings, is_loopback

# Serve's replica logger: its lines land in the replica's log with Serve's own request context.
logger = logging.getLogger("ray.serve")
T = TypeVar("T")
OPEN_PATHS = {"/healthz"}
"""Answered without an API key: load balancers and Kubernetes probes carry none."""
ROUTES = {"/healthz", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/solve"}


class EngineClient(Protocol):
    """The engine deployment as the API sees it (`serving.engine`): one prompt's completions, whole or streamed.

    `request_id` names the call in the engine (vLLM's request id) and in the logs."""

    def generate(self, request_id: str, prompt: list[int], params: SamplingParams) -> Awaitable[list[Completion]]: ...

    def stream(self, request_id: str, prompt: list[int], params: SamplingParams) -> AsyncIterator[list[Delta]]: ...


def build_fastapi(
    settings: ServeSettings, model_name: str, tokenizer, context_length: int | None, engine: EngineClient
) -> FastAPI:
    api = ServingApi(settings, model_name, tokenizer, context_length, engine)
    # No /docs: the routes read raw bodies (to answer every defect with a clear 400) so the schema would say little.
    app = FastAPI(title="selfexplore", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(ApiError, lambda _request, e: JSONResponse(e.body(), status_code=e.status))
    app.add_api_route("/healthz", api.healthz, methods=["GET"])
    app.add_api_route("/v1/models", api.models, methods=["GET"])
    app.add_api_route("/v1/completions", api.completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", api.chat_completions, methods=["POST"])
    app.add_api_route("/v1/solve", api.solve, methods=["POST"])
    app.add_middleware(Guard, api_key=settings.api_key, max_body_bytes=settings.limits.max_body_bytes)
    app.add_middleware(RequestMetrics)
    return app


class ServingApi:
    def __init__(self, settings: ServeSettings, model_name: str, tokenizer, context_length, engine: EngineClient):
        self.settings, self.limits = settings, settings.limits
        self.model_name, self.tokenizer, self.engine = model_name, tokenizer, engine
        self.context_length = context_length  # prompt + completion tokens the model attends to; None: unchecked
        self.created = int(time.time())
        self.prompt_tokens = Counter("selfexplore_prompt_tokens", description="Prompt tokens of served requests.")

    # ------------------------------------------------------------------------------------------- routes

    async def healthz(self) -> dict:
        return {"status": "ok", "model": self.model_name}

    async def models(self) -> dict:
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "selfexplore"}
        return {"object": "list", "data": [card]}

    async def completions(self, request: Request) -> Response:
        req = parse_body(await request.body(), CompletionRequest)
        self.check_model(req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) > self.limits.max_prompts:
            raise ApiError(400, self.over_limit("prompt", len(prompts), "max_prompts", "prompts per request"), "prompt")
        return await self.respond(req, prompts, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        req = parse_body(await request.body(), ChatRequest)
        self.check_model(req.model)
        # The model was trained on `question + "\n"`: a conversation becomes that prompt, its turns joined by lines.
        prompt = format_prompt("\n".join(message.text() for message in req.messages))
        return await self.respond(req, [prompt], chat=True)

    async def solve(self, request: Request) -> Response:
        req = parse_body(await request.body(), SolveRequest)
        task_name = req.task or self.settings.task
        if not task_name:
            raise ApiError(400, f"this server has no default task: pass \"task\" (one of {', '.join(TASKS)})", "task")
        if task_name not in TASKS:
            raise ApiError(400, f"unknown task {task_name!r}: choose one of {', '.join(TASKS)}", "task")
        task = get_task(task_name)
        (prompt,) = self.encode([format_prompt(req.problem)])
        prompt_tokens = len(prompt)
        params = self.sampling_params(req.max_tokens, 1, req.temperature, 1.0, [], req.seed, prompt_tokens)
        (completion,) = (await self.generate_all(f"solve-{uuid.uuid4().hex}", [prompt], params))[0]
        steps = [completion.text[start:end].strip() for start, end in task.split_steps(completion.text)]
        return JSONResponse(
            {
                "model": self.model_name,
                "task": task_name,
                "completion": completion.text,
                "steps": [step for step in steps if step],
                "answer": task.extract_answer(completion.text),
                "finish_reason": completion.finish_reason,
                "usage": usage(prompt_tokens, completion.n_tokens),
            }
        )

    # ------------------------------------------------------------------------------------------- shared

    async def respond(self, req: SamplingFields, prompts: list[str], chat: bool) -> Response:
        max_tokens = req.max_tokens
        if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
            max_tokens = req.max_completion_tokens
        prompt_ids = self.encode(prompts)
        lengths = [len(ids) for ids in prompt_ids]
        params = self.sampling_params(
            max_tokens, req.n, req.temperature, req.top_p, req.stop_list(), req.seed, max(lengths)
        )
        meta = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": self.model_name,
        }
        if req.stream:
            include_usage = req.stream_options is not None and req.stream_options.include_usage
            return await self.stream_response(meta, prompt_ids, params, sum(lengths) if include_usage else None, chat)
        outputs = await self.generate_all(meta["id"], prompt_ids, params)
        completions = [c for per_prompt in outputs for c in per_prompt]
        usage_block = usage(sum(lengths), sum(c.n_tokens for c in completions))
        if chat:
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(completions)
            ]
            return JSONResponse({**meta, "object": "chat.completion", "choices": choices, "usage": usage_block})
        choices = [
            {"index": i, "text": c.text, "logprobs": None, "finish_reason": c.finish_reason}
            for i, c in enumerate(completions)
        ]
        return JSONResponse({**meta, "object": "text_completion", "choices": choices, "usage": usage_block})

    async def stream_response(
        self, meta: dict, prompt_ids: list[list[int]], params: SamplingParams, prompt_tokens: int | None, chat: bool
    ) -> StreamingResponse:
        """Server-sent events as the engine produces them; `usage` last when `prompt_tokens` is given.

        Every prompt's stream starts now, so the engine works on all of them at once; their chunks are sent prompt
        after prompt (a prompt's waiting chunks queue up meanwhile)."""
        request_id = meta["id"]
        streams = [self.engine.stream(f"{request_id}-{i}", ids, params) for i, ids in enumerate(prompt_ids)]
        # Wait for the first output before answering 200: an engine that fails at once gets a clean 503.
        first = await self.guarded(request_id, anext(streams[0]))
        streams[0] = prepend(first, streams[0])
        events = stream_events(meta, numbered(streams, params.n), prompt_tokens, chat)
        return StreamingResponse(events, media_type="text/event-stream")

    def check_model(self, requested: str | None) -> None:
        if requested is not None and requested != self.model_name:
            raise ApiError(
                404,
                f"model {requested!r} is not served here; this server serves {self.model_name!r} (GET /v1/models)",
                "model",
                "model_not_found",
            )

    def sampling_params(self, max_tokens, n, temperature, top_p, stop, seed, longest_prompt: int) -> SamplingParams:
        limits = self.limits
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise ApiError(400, self.over_limit("max_tokens", max_tokens, "max_tokens", "tokens"), "max_tokens")
        if n > limits.max_n:
            raise ApiError(400, self.over_limit("n", n, "max_n", "completions per prompt"), "n")
        if len(stop) > limits.max_stop:
            raise ApiError(400, self.over_limit("stop", len(stop), "max_stop", "stop strings"), "stop")
        if any(not s for s in stop):
            raise ApiError(400, "stop strings must not be empty", "stop")
        room = None if self.context_length is None else self.context_length - longest_prompt
        if room is not None and room < 1:
            message = f"the prompt ({longest_prompt} tokens) fills the model's context of {self.context_length}"
            raise ApiError(400, message, "prompt")
        if max_tokens is None:
            # Like vLLM: an unset max_tokens means "as much as fits", up to the server's default.
            max_tokens = limits.default_max_tokens if room is None else min(limits.default_max_tokens, room)
        elif room is not None and max_tokens > room:
            raise ApiError(
                400,
                f"the model's context is {self.context_length} tokens, but the prompt ({longest_prompt}) plus "
                f"max_tokens ({max_tokens}) needs {longest_prompt + max_tokens}: lower max_tokens",
                "max_tokens",
            )
        return SamplingParams(
            n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=tuple(stop), seed=seed
        )

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt (what the engine gets, as the `hf` and `vllm` engines encode prompts),
        refusing any prompt over the limit."""
        prompt_ids = [self.tokenizer(prompt).input_ids for prompt in prompts]
        for ids in prompt_ids:
            if len(ids) > self.limits.max_prompt_tokens:
                raise ApiError(400, self.over_limit("prompt", len(ids), "max_prompt_tokens", "tokens"), "prompt")
        total = sum(len(ids) for ids in prompt_ids)
        if total:
            self.prompt_tokens.inc(total)
        return prompt_ids

    async def generate_all(
        self, request_id: str, prompt_ids: list[list[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        calls = (self.engine.generate(f"{request_id}-{i}", ids, params) for i, ids in enumerate(prompt_ids))
        return await self.guarded(request_id, asyncio.gather(*calls))

    async def guarded(self, request_id: str, call: Awaitable[T]) -> T:
        """The engine's answer, or a 503 for the client and one log line for the operator when it failed."""
        try:
            return await call
        except Exception as e:  # noqa: BLE001 - any engine failure is the server's, not the client's
            raise engine_failure(request_id, e) from None

    def over_limit(self, field: str, value: int, limit_name: str, unit: str) -> str:
        limit = getattr(self.limits, limit_name)
        return f"{field} is {value} {unit}, over this server's limit of {limit} (limits.{limit_name})"


def engine_failure(request_id: str, error: BaseException) -> ApiError:
    """Log a failed engine call with its request id (one line: the cause, without Ray's tracebacks) and say
    which request failed, and nothing of the server's insides, to the client."""
    logger.error("request %s: generation failed: %s", request_id, root_cause(error))
    return ApiError(503, f"generation failed, retry later (request {request_id}; the server log has the cause)")


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def prepend(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    yield first
    async for item in rest:
        yield item


async def numbered(streams: list[AsyncIterator[list[Delta]]], n: int) -> AsyncIterator[tuple[int, Delta]]:
    """Each prompt's deltas with their choice index (prompt i's j-th completion is choice i * n + j)."""
    for i, stream in enumerate(streams):
        async for deltas in stream:
            for delta in deltas:
                yield i * n + delta.index, delta


async def stream_events(
    meta: dict, choices: AsyncIterator[tuple[int, Delta]], prompt_tokens: int | None, chat: bool
) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, one per delta, ending with `data: [DONE]`.

    A chat choice's first chunk carries the role. `usage` comes last when `prompt_tokens` is given. An engine
    failure after the first chunk (the response is already a 200) ends the stream with an OpenAI error event,
    which OpenAI clients raise as an error.
    """
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict], **extra) -> str:
        return f"data: {json.dumps({**meta, 'object': kind, 'choices': choices, **extra})}\n\n"

    started: set[int] = set()
    completion_tokens = 0
    try:
        async for index, delta in choices:
            completion_tokens += len(delta.token_ids)
            if chat:
                content = {"content": delta.text} if index in started else {"role": "assistant", "content": delta.text}
                started.add(index)
                yield event([{"index": index, "delta": content, "finish_reason": delta.finish_reason}])
            else:
                choice = {"index": index, "text": delta.text, "logprobs": None, "finish_reason": delta.finish_reason}
                yield event([choice])
    except Exception as e:  # noqa: BLE001 - any engine failure is the server's, not the client's
        yield f"data: {json.dumps(engine_failure(meta['id'], e).body())}\n\n"
        return
    if prompt_tokens is not None:
        yield event([], usage=usage(prompt_tokens, completion_tokens))
    yield "data: [DONE]\n\n"


# ----------------------------------------------------------------------------------------------- ASGI layers


def app_path(scope) -> str:
    """The path within the app: Serve mounts it under its `route_prefix`, which arrives as ASGI's `root_path`."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


async def send_error(send, error: ApiError, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Checks who may call (API key, or loopback clients only when there is no key) and the body size.

    The body is read here, up to the limit, and handed on: nothing larger than the limit is ever buffered.
    """

    def __init__(self, app, api_key: str, max_body_bytes: int):
        self.app = app
        self.expected = f"Bearer {api_key}".encode() if api_key else b""
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if app_path(scope) not in OPEN_PATHS:
            refusal = self.refusal(scope)
            if refusal is not None:
                headers = [(b"www-authenticate", b"Bearer")] if refusal.status == 401 else []
                return await send_error(send, refusal, headers)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_error(send, ApiError(400, "the Content-Length header is not a number"))
            if int(declared) > self.max_body_bytes:
                return await send_error(send, self.too_large(int(declared)))
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await send_error(send, self.too_large(len(body)))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def refusal(self, scope) -> ApiError | None:
        if not self.expected:
            client = scope.get("client")
            if client and is_loopback(client[0]):
                return None
            return ApiError(
                403,
                f"this server has no API key, so it answers only clients on the same machine; "
                f"start it with --api-key or ${API_KEY_ENV} to serve others",
            )
        given = dict(scope["headers"]).get(b"authorization", b"")
        # Constant-time comparison: the time taken reveals nothing about how much of the key was right.
        if not hmac.compare_digest(given, self.expected):
            reason = "wrong API key" if given else "missing API key: send the header 'Authorization: Bearer KEY'"
            return ApiError(401, reason, code="invalid_api_key")
        return None

    def too_large(self, size: int) -> ApiError:
        return ApiError(
            413,
            f"the request body is {size} bytes or more, over this server's limit of {self.max_body_bytes} "
            f"bytes (limits.max_body_bytes)",
        )


class RequestMetrics:
    """Prometheus request count (by route and status) and latency (until the last byte of the response)."""

    def __init__(self, app):
        self.app = app
        self.requests = Counter(
            "selfexplore_http_requests", description="HTTP requests by route and status.", tag_keys=("path", "status")
        )
        self.latency = Histogram(
            "selfexplore_http_request_latency_s",
            description="Time from request to last response byte, by route.",
            boundaries=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
            tag_keys=("path",),
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Unknown paths share one label, so scanners cannot blow up the number of time series.
        path = app_path(scope) if app_path(scope) in ROUTES else "other"
        start, status = time.perf_counter(), 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.latency.observe(time.perf_counter() - start, tags={"path": path})
                self.requests.inc(tags={"path": path, "status": str(status)})

        await self.app(scope, receive, send_and_record)

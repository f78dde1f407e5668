"""The wire format: OpenAI-compatible request bodies (the subset we serve), `/v1/solve`, and error bodies.

Request models are strict (a string where a number belongs is an error, not coerced) and ignore fields they do
not know, as OpenAI clients send optional fields freely. Errors use OpenAI's shape,
`{"error": {"message", "type", "param", "code"}}`, so clients show the message.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """A request the client must change (4xx) or a failure it may retry (5xx); the message says which."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        if self.status == 401:
            kind = "authentication_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class StreamOptions(Request):
    include_usage: bool = False


class SamplingFields(Request):
    """Fields shared by completions and chat completions; defaults are OpenAI's."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(min_length=1)


class TextPart(Request):
    type: Literal["text"]
    text: str


class Message(Request):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    """OpenAI's newer name for `max_tokens` in chat; either may be given."""


class SolveRequest(Request):
    problem: str = Field(min_length=1)
    task: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    """Greedy by default: the answer a user gets is the model's best guess, the same every time."""
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)


def parse_body(raw: bytes, model: type[Request]) -> Request:
    """Decode and validate a JSON body, turning every defect into a 400 that says what to fix."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid JSON ({e})", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "the request body nests JSON too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(part) for part in first["loc"])
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors())
        raise ApiError(400, f"invalid request: {problems}", param=param or None) from None

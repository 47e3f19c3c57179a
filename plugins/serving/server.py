"""``hwkit serve``: an OpenAI-compatible chat server (FastAPI + uvicorn).

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE streaming), ``GET /v1/models``,
``GET /health``. Safe by default: a bearer token is required to bind anything but
localhost; request bytes, message count and generation length are limited; a bounded
number of requests may be queued or running (429 past it); models load lazily under a
memory budget and the least recently used is unloaded first.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwkit.errors import HwkitError, NoFitError, NotFoundError, UsageError
from hwkit.log import get_logger

log = get_logger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TOKEN_ENV = "HWKIT_SERVE_TOKEN"
SESSION_HEADER = "x-session-id"
PERSONA_HEADER = "x-persona"


class ServeConfig(BaseModel):
    """Everything ``hwkit serve`` takes; the CLI flags map one to one."""

    model_config = ConfigDict(extra="forbid")

    models: dict[str, str] = Field(description="served name -> model name, HF dir or run dir")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: str | None = None
    memory_budget: int = Field(..., gt=0, description="bytes of weights kept loaded")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    session_messages: int = Field(10, ge=1)
    max_queue: int = Field(8, ge=1, description="requests queued or running; 429 beyond")
    workers: int = Field(1, ge=1, description="generations running at once")
    max_request_bytes: int = Field(64 * 1024, ge=256)
    max_messages: int = Field(64, ge=1)
    max_tokens_limit: int = Field(512, ge=1, description="largest max_tokens accepted")
    default_max_tokens: int = Field(128, ge=1)
    personas_file: Path | None = None
    default_persona: str | None = None


def check_bind(config: ServeConfig) -> None:
    """Refuse to listen beyond localhost without a token."""
    if config.host not in LOCAL_HOSTS and not config.token:
        raise UsageError(
            f"refusing to bind {config.host} without a bearer token",
            hint=f"pass --token or set {TOKEN_ENV}, or bind 127.0.0.1",
        )


class ChatMessage(BaseModel):
    """One OpenAI chat message; content parts of type text are joined into a string."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, value: Any) -> Any:
        if isinstance(value, list):
            texts = []
            for part in value:
                if not (
                    isinstance(part, dict)
                    and part.get("type") == "text"
                    and isinstance(part.get("text"), str)
                ):
                    raise ValueError("only text content parts are supported")
                texts.append(part["text"])
            return "".join(texts)
        return value


class ChatRequest(BaseModel):
    """The subset of the OpenAI chat-completions request we honour (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    user: str | None = Field(None, max_length=256)
    persona: str | None = None


class ApiError(Exception):
    """An HTTP error with an OpenAI-style JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = (
            status,
            message,
            type_,
            code,
            param,
        )

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _error_response(err: ApiError) -> JSONResponse:
    headers = {"Retry-After": "1"} if err.status == 429 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


class ServerState:
    """Shared by all requests: the model pool, sessions, personas and the queue counter."""

    def __init__(self, config: ServeConfig) -> None:
        from hwkit.plugins.serving.pool import ModelPool
        from hwkit.plugins.serving.sessions import SessionStore, load_personas, persona_prompt

        self.config = config
        self.pool = ModelPool(config.models, config.memory_budget, config.dtype)
        self.sessions = SessionStore(keep=config.session_messages)
        self.personas = load_personas(config.personas_file)
        if config.default_persona:
            persona_prompt(self.personas, config.default_persona)
        self.active = 0
        self._active_lock = threading.Lock()
        self.workers = threading.BoundedSemaphore(config.workers)
        self.created = int(time.time())

    def enter(self) -> None:
        with self._active_lock:
            if self.active >= self.config.max_queue:
                raise ApiError(
                    429,
                    f"server busy: {self.active} requests queued or running "
                    f"(limit {self.config.max_queue}); retry later",
                    "rate_limit_error",
                    "queue_full",
                )
            self.active += 1

    def leave(self) -> None:
        with self._active_lock:
            self.active -= 1


def _check_auth(state: ServerState, request: Request) -> None:
    token = state.config.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(
            401, "missing or wrong bearer token", "authentication_error", "invalid_api_key"
        )


async def _parse(state: ServerState, request: Request) -> ChatRequest:
    cfg = state.config
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cfg.max_request_bytes:
        raise ApiError(
            413,
            f"request body of {length} bytes exceeds the limit of {cfg.max_request_bytes}",
            code="request_too_large",
        )
    body = await request.body()
    if len(body) > cfg.max_request_bytes:
        raise ApiError(
            413,
            f"request body of {len(body)} bytes exceeds the limit of {cfg.max_request_bytes}",
            code="request_too_large",
        )
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not JSON: {exc}") from exc
    if (
        isinstance(data, dict)
        and isinstance(data.get("messages"), list)
        and len(data["messages"]) > cfg.max_messages
    ):
        raise ApiError(
            413,
            f"{len(data['messages'])} messages exceed the limit of {cfg.max_messages}",
            code="too_many_messages",
            param="messages",
        )
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ApiError(400, f"invalid request: {where}: {first['msg']}", param=where) from exc
    limit = req.max_completion_tokens or req.max_tokens
    if limit is not None and limit > cfg.max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens {limit} exceeds the server's limit of {cfg.max_tokens_limit}",
            param="max_tokens",
        )
    return req


def _conversation(
    state: ServerState, req: ChatRequest, request: Request
) -> tuple[list[dict[str, str]], str | None, list[dict[str, str]]]:
    """(messages for the prompt, session id, new messages to remember)."""
    from hwkit.plugins.serving.sessions import persona_prompt

    incoming = [m.model_dump() for m in req.messages]
    systems = [m for m in incoming if m["role"] == "system"]
    turns = [m for m in incoming if m["role"] != "system"]
    session = request.headers.get(SESSION_HEADER) or req.user
    if session:
        turns = state.sessions.history(session) + turns
    turns = turns[-state.config.session_messages :]
    persona = req.persona or request.headers.get(PERSONA_HEADER) or state.config.default_persona
    if not systems and persona:
        try:
            systems = [{"role": "system", "content": persona_prompt(state.personas, persona)}]
        except NotFoundError as exc:
            raise ApiError(400, exc.one_line(), param="persona") from exc
    new = [m for m in incoming if m["role"] != "system"]
    return systems + turns, session, new


def create_app(config: ServeConfig) -> FastAPI:
    """The FastAPI application for ``config`` (models load on first request)."""
    from hwkit.plugins.serving import generate as gen

    state = ServerState(config)
    app = FastAPI(title="hwkit serve", version="1", docs_url=None, redoc_url=None)
    app.state.hwkit = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": state.pool.names(),
            "loaded": state.pool.loaded(),
            "memory_budget": state.pool.budget,
            "memory_used": state.pool.used_bytes(),
            "queue": state.active,
            "max_queue": config.max_queue,
            "sessions": len(state.sessions),
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        _check_auth(state, request)
        loaded = set(state.pool.loaded())
        return {
            "object": "list",
            "data": [
                {
                    "id": n,
                    "object": "model",
                    "created": state.created,
                    "owned_by": "hwkit",
                    "loaded": n in loaded,
                }
                for n in state.pool.names()
            ],
        }

    async def _load(name: str) -> Any:
        try:
            return await anyio.to_thread.run_sync(state.pool.get, name)
        except NotFoundError as exc:
            raise ApiError(
                404,
                f"model {name!r} is not served; known: {', '.join(state.pool.names())}",
                code="model_not_found",
                param="model",
            ) from exc
        except NoFitError as exc:
            raise ApiError(503, exc.one_line(), "server_error", "over_memory_budget") from exc

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        _check_auth(state, request)
        req = await _parse(state, request)
        if req.model not in state.pool.names():
            raise ApiError(
                404,
                f"model {req.model!r} is not served; known: {', '.join(state.pool.names())}",
                code="model_not_found",
                param="model",
            )
        messages, session, new = _conversation(state, req, request)
        state.enter()
        released = False
        try:
            loaded = await _load(req.model)
            max_new = req.max_completion_tokens or req.max_tokens or config.default_max_tokens
            try:
                prompt = gen.build_prompt(loaded.tokenizer, loaded.model, messages, max_new)
            except UsageError as exc:
                raise ApiError(400, exc.one_line(), param="messages") from exc
            cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            created = int(time.time())
            if req.stream:
                released = True
                return StreamingResponse(
                    _stream(state, loaded, prompt, req, cid, created, session, new),
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )

            def run() -> tuple[str, int, str]:
                with state.workers, loaded.lock:
                    return gen.generate(
                        loaded.model,
                        loaded.tokenizer,
                        prompt,
                        temperature=req.temperature,
                        top_p=req.top_p,
                    )

            text, n_out, finish = await anyio.to_thread.run_sync(run)
        finally:
            if not released:
                state.leave()
        if session:
            state.sessions.extend(session, [*new, {"role": "assistant", "content": text}])
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt.prompt_tokens,
                "completion_tokens": n_out,
                "total_tokens": prompt.prompt_tokens + n_out,
            },
        }

    return app


async def _stream(
    state: ServerState,
    loaded: Any,
    prompt: Any,
    req: ChatRequest,
    cid: str,
    created: int,
    session: str | None,
    new: list[dict[str, str]],
) -> Any:
    """SSE: a role chunk, content chunks, a finish chunk, then ``data: [DONE]``."""
    from hwkit.plugins.serving import generate as gen

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return f"data: {json.dumps(body)}\n\n"

    result = gen.StreamResult()
    pieces: list[str] = []
    done = object()
    try:
        state.workers.acquire()
        try:
            it = gen.stream(
                loaded.model,
                loaded.tokenizer,
                prompt,
                temperature=req.temperature,
                top_p=req.top_p,
                lock=loaded.lock,
                result=result,
            )
            yield chunk({"role": "assistant", "content": ""})
            while True:
                piece = await anyio.to_thread.run_sync(next, it, done)
                if piece is done:
                    break
                pieces.append(str(piece))
                yield chunk({"content": str(piece)})
        except HwkitError as exc:
            err = {
                "error": {
                    "message": exc.one_line(),
                    "type": "server_error",
                    "code": None,
                    "param": None,
                }
            }
            yield f"data: {json.dumps(err)}\n\n"
            return
        finally:
            state.workers.release()
        yield chunk({}, result.finish_reason)
        yield "data: [DONE]\n\n"
        if session:
            state.sessions.extend(
                session, [*new, {"role": "assistant", "content": "".join(pieces)}]
            )
    finally:
        state.leave()


def serve(config: ServeConfig) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    check_bind(config)
    app = create_app(config)
    log.info(
        "serve.start",
        host=config.host,
        port=config.port,
        models=list(config.models),
        budget_mib=round(config.memory_budget / 2**20),
        auth=bool(config.token),
    )
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)

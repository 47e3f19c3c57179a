"""The HTTP side of ``hwkit serve``: endpoints, bearer-token auth and admission.

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE streaming), ``GET /v1/models``,
``GET /health``. Safe by default: request bytes, message count and generation length are
limited, and a bounded number of requests may be queued or running (429 past it). Models
come from the :class:`~hwkit.plugins.serving.pool.ModelPool`, each on the device its plan
chose. FastAPI is imported here at the top: :func:`hwkit.plugins.serving.app.serve` checks
the ``serve`` extra before importing this module.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from hwkit.errors import NoFitError, NotFoundError, UsageError
from hwkit.plugins.serving.config import ServeConfig
from hwkit.plugins.serving.schemas import ApiError, ChatRequest, error_response

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable

    from hwkit.inference import Generator
    from hwkit.plugins.rag.chat import RagChat
    from hwkit.retriever import Document
    from hwkit.runtime import Runtime

SESSION_HEADER = "x-session-id"
PERSONA_HEADER = "x-persona"


class ServerState:
    """Shared by all requests: the model pool, sessions, personas and the admission count."""

    def __init__(self, config: ServeConfig, runtime: Runtime) -> None:
        from hwkit.plugins.serving.pool import ModelPool
        from hwkit.plugins.serving.sessions import SessionStore, load_personas, persona_prompt

        self.config = config
        self.pool = ModelPool(
            config.models,
            runtime,
            budget=config.memory_budget,
            dtype=config.dtype,
            sequences=config.batch,
            context=config.context,
            runtimes=config.runtimes,
        )
        self.sessions = SessionStore(keep=config.session_messages)
        self.personas = load_personas(config.personas_file)
        if config.default_persona:
            persona_prompt(self.personas, config.default_persona)
        self.active = 0
        self._active_lock = threading.Lock()
        # generations at once on models that decode one sequence at a time; a batching
        # model's concurrent requests go to its batcher together
        self.workers = threading.BoundedSemaphore(config.workers)
        self.created = int(time.time())
        self.rag: dict[str, RagChat] = {}
        if config.rag:
            from hwkit.plugins.rag.chat import RagChat

            opened: dict[Any, RagChat] = {}  # one load per index shared by several models
            for name, index in config.rag.items():
                if index not in opened:
                    opened[index] = RagChat.open(index, k=config.rag_k, runtime=runtime)
                self.rag[name] = opened[index]

    def enter(self) -> None:
        """Admit one request, or 429 when ``max_queue`` are already queued or running."""
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

    def workers_for(self, generator: Generator) -> threading.BoundedSemaphore | None:
        """The ``workers`` bound for a model that runs one sequence at a time; None for a
        batching one."""
        return self.workers if generator.batch <= 1 else None


class ClosingStream(StreamingResponse):
    """A streamed response that gives its request's resources back however it ends.

    Starlette cancels a response whose client disconnected; a body generator that never
    started, or that is parked at a ``yield`` when the cancellation lands in ``send``, would
    run its ``finally`` only when garbage collected (the queue slot and the model lease
    leaked until then). This closes the body and calls ``on_close`` (idempotent) in every
    case.
    """

    def __init__(
        self, events: AsyncGenerator[str, None], on_close: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(events, **kwargs)
        self.events = events
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.events.aclose()  # the stream's own finally: its row stops
            finally:
                self.on_close()


def check_auth(state: ServerState, request: Request) -> None:
    """401 unless the configured bearer token was sent (compared in constant time)."""
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


async def parse_request(state: ServerState, request: Request) -> ChatRequest:
    """The request body as a ChatRequest, within the configured limits (413/400)."""
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


def conversation(
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


def _not_served(state: ServerState, name: str) -> ApiError:
    return ApiError(
        404,
        f"model {name!r} is not served; known: {', '.join(state.pool.names())}",
        code="model_not_found",
        param="model",
    )


async def _acquire(state: ServerState, name: str) -> Generator:
    """The model from the pool (loaded on a thread), held until released."""
    try:
        return await anyio.to_thread.run_sync(state.pool.acquire, name)
    except NotFoundError as exc:
        raise _not_served(state, name) from exc
    except NoFitError as exc:
        raise ApiError(503, exc.one_line(), "server_error", "over_memory_budget") from exc


def create_app(config: ServeConfig, runtime: Runtime) -> FastAPI:
    """The FastAPI application for ``config``; models load on first request, planned on
    ``runtime``'s devices."""
    from hwkit.inference import GenerationParams
    from hwkit.plugins.serving.streaming import chat_events

    state = ServerState(config, runtime)
    app = FastAPI(title="hwkit serve", version="1", docs_url=None, redoc_url=None)
    app.state.hwkit = state

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        response: JSONResponse = error_response(exc)
        return response

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "models": state.pool.names(),
            "loaded": state.pool.loaded(),
            "placements": state.pool.placements(),
            "memory_budget": state.pool.budget,
            "memory_used": state.pool.used_bytes(),
            "reserved": state.pool.reserved(),
            "queue": state.active,
            "max_queue": config.max_queue,
            "sessions": len(state.sessions),
        }

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_auth(state, request)
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

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        check_auth(state, request)
        req = await parse_request(state, request)
        if req.model not in state.pool.names():
            raise _not_served(state, req.model)
        messages, session, new = conversation(state, req, request)
        rag = state.rag.get(req.model)
        passages: list[Document] = []
        if rag is not None:
            try:
                messages, passages = await anyio.to_thread.run_sync(rag.prompt, messages)
            except UsageError as exc:
                raise ApiError(400, exc.one_line(), param="messages") from exc

        def citations(text: str) -> dict[str, Any]:
            """The ``citations`` extension field of a RAG model's reply (none otherwise)."""
            if rag is None:
                return {}
            from hwkit.plugins.rag.chat import cited

            return {"citations": cited(text, passages)}

        def remember(text: str) -> None:
            if session:
                state.sessions.extend(session, [*new, {"role": "assistant", "content": text}])

        state.enter()
        generator: Generator | None = None
        handed_over = False  # the stream gives the queue slot and the model back
        given_back = False

        def give_back() -> None:  # once, whichever of the stream's ends calls it first
            nonlocal given_back
            if given_back:
                return
            given_back = True
            if generator is not None:
                state.pool.release(generator)
            state.leave()

        try:
            generator = await _acquire(state, req.model)
            max_new = req.max_completion_tokens or req.max_tokens or config.default_max_tokens
            try:
                prompt = generator.prompt(messages, max_new)
            except UsageError as exc:
                raise ApiError(400, exc.one_line(), param="messages") from exc
            params = GenerationParams(max_new, req.temperature, req.top_p, seed=req.seed)
            cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
            created = int(time.time())
            workers = state.workers_for(generator)
            if req.stream:
                events = chat_events(
                    generator,
                    prompt,
                    params,
                    model=req.model,
                    cid=cid,
                    created=created,
                    workers=workers,
                    on_complete=remember,
                    on_close=give_back,
                    usage=bool(req.stream_options and req.stream_options.include_usage),
                    final=citations,
                )
                handed_over = True
                return ClosingStream(
                    events,
                    give_back,
                    media_type="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                )

            def run() -> Any:
                assert generator is not None
                with workers if workers is not None else contextlib.nullcontext():
                    return generator.generate(prompt, params)

            completion = await anyio.to_thread.run_sync(run)
        finally:
            if not handed_over:
                give_back()
        remember(completion.text)
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": req.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": completion.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "total_tokens": completion.prompt_tokens + completion.completion_tokens,
            },
            **citations(completion.text),
        }

    return app

"""``hwkit serve`` (OpenAI-compatible chat server) and ``hwkit chat`` (terminal chat)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

DEFAULT_MODEL = "smollm2-135m-instruct"
# ServeConfig fields whose flag is not the field's name
FLAGS = {"models": "--model", "max_tokens_limit": "--max-tokens", "personas_file": "--personas"}


def _models(specs: list[str], registry: Path | None = None) -> dict[str, str]:
    """``NAME=SOURCE`` or ``SOURCE`` (named after its last path part; ``registry:MODEL``
    after MODEL) to a mapping; ``registry`` is the root of ``registry:MODEL`` sources."""
    from hwkit.errors import UsageError
    from hwkit.plugins.serving.champion import RegistrySource, with_root

    out: dict[str, str] = {}
    for spec in specs or [DEFAULT_MODEL]:
        name, sep, source = spec.partition("=")
        if not sep:
            from_registry = RegistrySource.parse(spec)
            name = from_registry.model if from_registry else Path(spec).name or spec
            source = spec
        if not name or not source:
            raise UsageError(f"--model {spec!r}: expected NAME=SOURCE or SOURCE")
        if name in out:
            raise UsageError(f"--model {spec!r}: the name {name!r} is given twice")
        RegistrySource.parse(source)  # a registry:MODEL with a bad model name: one line
        out[name] = source if registry is None else with_root(source, registry)
    if registry is not None and not any(RegistrySource.parse(s) for s in out.values()):
        raise UsageError(
            "--registry is given but no --model is served from it",
            hint="serve a registry's champion with -m NAME=registry:MODEL",
        )
    return out


def _rag(specs: list[str], models: dict[str, str]) -> dict[str, Path]:
    """``NAME=INDEX`` or ``INDEX`` (for every served model) to a mapping, names checked."""
    from hwkit.errors import UsageError

    out: dict[str, Path] = {}
    for spec in specs:
        name, sep, index = spec.partition("=")
        names = [name] if sep else list(models)
        path = Path(index if sep else spec)
        for n in names:
            if n not in models:
                raise UsageError(
                    f"--rag {spec!r}: no served model is named {n!r}",
                    hint=f"served: {', '.join(models)}",
                )
            out[n] = path
    return out


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        model: list[str] = typer.Option(
            [],
            "--model",
            "-m",
            help="NAME=SOURCE (repeatable); SOURCE: a model name, HF dir, run dir, .gguf file, "
            "OpenVINO IR dir, or registry:MODEL (the registry's champion, followed when it "
            "changes)",
        ),
        registry: Path | None = typer.Option(
            None,
            "--registry",
            help="model registry of registry:MODEL sources (default: $HWKIT_REGISTRY_DIR or "
            "~/.local/share/hwkit/registry)",
        ),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port"),
        token: str | None = typer.Option(
            None, "--token", help="bearer token (or HWKIT_SERVE_TOKEN); required off localhost"
        ),
        memory_budget: str | None = typer.Option(
            None,
            "--memory-budget",
            help="cap per device on the loaded models' planned bytes, e.g. 2GiB (default: "
            "each device's plan budget only)",
        ),
        context: int | None = typer.Option(
            None, "--context", help="tokens per sequence, prompt and reply (default: 4096 or less)"
        ),
        runtime_names: list[str] = typer.Option(
            [],
            "--runtime",
            help="inference runtime to use (repeatable, in order; default: the plan's choice "
            "among those that load each model)",
        ),
        dtype: str | None = typer.Option(
            None, "--dtype", help="float32 | bfloat16 | float16 (default: each model's plan)"
        ),
        session_messages: int = typer.Option(10, "--session-messages"),
        max_queue: int = typer.Option(8, "--max-queue", help="queued + running; 429 beyond"),
        workers: int = typer.Option(
            1, "--workers", help="generations at once on models that do not batch"
        ),
        batch: int = typer.Option(
            8,
            "--batch",
            help="concurrent sequences per model, decoded together (the plan may fit fewer)",
        ),
        max_request_bytes: int = typer.Option(65536, "--max-request-bytes"),
        max_messages: int = typer.Option(64, "--max-messages"),
        max_tokens: int = typer.Option(512, "--max-tokens", help="largest max_tokens accepted"),
        personas: Path | None = typer.Option(None, "--personas", help="TOML of [name] system=..."),
        persona: str | None = typer.Option(None, "--persona", help="default persona"),
        rag: list[str] = typer.Option(
            [],
            "--rag",
            help="NAME=INDEX (repeatable) or INDEX (every model): answer from an hwkit index, "
            "with citations",
        ),
        rag_k: int = typer.Option(3, "--rag-k", help="passages per answer for RAG models"),
    ) -> None:
        """Serve models over an OpenAI-compatible HTTP API (/v1/chat/completions)."""
        from pydantic import ValidationError

        from hwkit.errors import UsageError
        from hwkit.plugins.serving.app import serve
        from hwkit.plugins.serving.config import TOKEN_ENV, ServeConfig, check_bind, parse_size
        from hwkit.plugins.serving.pool import check_sources
        from hwkit.runtime import current

        try:
            config = ServeConfig(
                models=_models(model, registry),
                host=host,
                port=port,
                token=token or os.environ.get(TOKEN_ENV) or None,
                memory_budget=parse_size(memory_budget) if memory_budget else None,
                dtype=dtype,
                session_messages=session_messages,
                max_queue=max_queue,
                workers=workers,
                batch=batch,
                context=context,
                runtimes=tuple(runtime_names),
                max_request_bytes=max_request_bytes,
                max_messages=max_messages,
                max_tokens_limit=max_tokens,
                personas_file=personas,
                default_persona=persona,
                rag=_rag(rag, _models(model)),
                rag_k=rag_k,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "config"
            flag = FLAGS.get(field, "--" + field.replace("_", "-"))
            raise UsageError(f"hwkit serve {flag}: {first['msg']}") from None
        check_bind(config)
        check_sources(config.models)
        for index in config.rag.values():
            from hwkit.plugins.retrievers.store import read_manifest

            read_manifest(index, verify=False)  # one line when it is not an index
        serve(config, current())

    @app.command("chat")
    def chat_cmd(
        model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="model name or path"),
        url: str | None = typer.Option(None, "--url", help="a server's base URL (…/v1)"),
        token: str | None = typer.Option(None, "--token", help="bearer token for --url"),
        system: str | None = typer.Option(None, "--system", help="system prompt"),
        message: str | None = typer.Option(None, "--message", help="one turn, then exit"),
        max_tokens: int = typer.Option(256, "--max-tokens"),
        keep: int = typer.Option(10, "--keep", help="messages of history kept"),
    ) -> None:
        """Chat in the terminal with a local model or a running server; streams replies."""
        from hwkit.plugins.serving.chat import chat_loop
        from hwkit.plugins.serving.config import TOKEN_ENV

        chat_loop(
            model=model,
            url=url,
            token=token or os.environ.get(TOKEN_ENV),
            system=system,
            message=message,
            max_tokens=max_tokens,
            keep=keep,
            out=sys.stdout,
        )

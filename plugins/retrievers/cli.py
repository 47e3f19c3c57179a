"""``hwkit index build|add|info``, ``hwkit search`` and ``hwkit retrieval eval``.

Only typer and hwkit's light modules are imported here; bm25s, torch and pymilvus load
inside the commands. Retrievers come from the process runtime's registry
(``hwkit.runtime.current()``) and their embedders from the core
(``hwkit.jobs.load_embedder``) on that runtime, so they run where the plan puts them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from hwkit.errors import UsageError

if TYPE_CHECKING:
    from hwkit.runtime import Runtime

index_app = typer.Typer(help="Build and inspect retrieval indexes.", no_args_is_help=True)
retrieval_app = typer.Typer(help="Evaluate retrievers on BEIR-format data.", no_args_is_help=True)

RETRIEVER_HELP = "bm25, dense, hybrid, rerank, milvus (or a plugin's retriever)."
INT8_HELP = (
    "openvino embedder: 'weights' (INT8 weights, float activations) or 'full' (weights and "
    "activations INT8, calibrated on a seeded 300-document sample of the corpus)."
)
EMBEDDING_RETRIEVERS = ("dense", "hybrid", "milvus")


def _embedder_options(
    retriever: str, embedder: str, int8: str | None, docs: Sequence[Any] = ()
) -> dict[str, Any]:
    """Constructor options for the embedder from ``--int8`` (checked here; see
    ``hwkit.plugins.retrievers.embedding.int8_options``)."""
    if int8 is None:
        return {}
    if int8 not in ("weights", "full"):
        raise UsageError(f"--int8 must be 'weights' or 'full', got {int8!r}")
    if embedder != "openvino" or retriever not in EMBEDDING_RETRIEVERS:
        raise UsageError(
            f"--int8 quantises the openvino embedder; got --embedder {embedder} "
            f"with the {retriever} retriever",
            hint="use --embedder openvino with a dense, hybrid or milvus retriever",
        )
    from hwkit.plugins.retrievers.embedding import int8_options

    return int8_options(int8, docs)


def _make_retriever(
    name: str,
    *,
    runtime: Runtime,
    embedder: str,
    model: str | None,
    rerank_model: str | None = None,
    alpha: float | None = None,
    fusion: str | None = None,
    milvus_uri: str | None = None,
    embedder_options: dict[str, Any] | None = None,
) -> Any:
    """A fresh retriever from the runtime's registry, with its embedder built by the core
    on that runtime where the retriever takes one."""
    # Any: subclasses take constructor arguments the Retriever base does not declare.
    cls: Any = runtime.plugins.retrievers.get(name)
    if name in EMBEDDING_RETRIEVERS:
        from hwkit.plugins.retrievers.embedding import make_embedder

        kwargs: dict[str, Any] = {}
        if name == "hybrid":
            kwargs = {k: v for k, v in (("alpha", alpha), ("fusion", fusion)) if v is not None}
        if name == "milvus" and milvus_uri:
            kwargs["uri"] = milvus_uri
        emb = make_embedder(embedder, model, runtime=runtime, **(embedder_options or {}))
        return cls(emb, runtime=runtime, **kwargs)
    if name == "rerank":
        if not rerank_model:
            raise UsageError(
                "the rerank retriever needs --rerank-model PATH",
                hint="a local cross-encoder directory",
            )
        return cls(rerank_model, runtime=runtime)
    return cls()


def _device_of(retriever: Any) -> str | None:
    """The id of the device the retriever's embedder runs on (None without one)."""
    device = getattr(getattr(retriever, "embedder", None), "device", None)
    return getattr(device, "id", None)


def _console() -> Any:
    from rich.console import Console

    return Console()


def build(
    directory: Path = typer.Argument(..., help="Index directory to create or replace."),
    corpus: Path = typer.Option(..., "--from", help="BEIR corpus.jsonl (_id, title, text)."),
    retriever: str = typer.Option("hybrid", "--retriever", "-r", help=RETRIEVER_HELP),
    embedder: str = typer.Option("torch", "--embedder", help="torch or openvino."),
    int8: str | None = typer.Option(None, "--int8", help=INT8_HELP),
    model: str | None = typer.Option(
        None, "--model", help="Embedding model directory (default all-MiniLM-L6-v2)."
    ),
    rerank_model: str | None = typer.Option(
        None, "--rerank-model", help="Cross-encoder directory (rerank)."
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Hybrid dense weight in [0, 1]."),
    fusion: str | None = typer.Option(None, "--fusion", help="Hybrid fusion: convex or rrf."),
    milvus_uri: str | None = typer.Option(
        None, "--milvus-uri", help="Milvus URI (milvus retriever)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Index a corpus; the old index survives until the new one is complete."""
    import time

    from hwkit.plugins.retrievers.documents import read_corpus
    from hwkit.runtime import current

    docs, rejects = read_corpus(corpus)
    r = _make_retriever(
        retriever,
        runtime=current(),
        embedder=embedder,
        model=model,
        rerank_model=rerank_model,
        alpha=alpha,
        fusion=fusion,
        milvus_uri=milvus_uri,
        embedder_options=_embedder_options(retriever, embedder, int8, docs),
    )
    t0 = time.perf_counter()
    r.index(docs)
    r.rejects = list(rejects) + list(r.rejects)
    r.save(directory)
    elapsed = time.perf_counter() - t0
    device = _device_of(r)
    info = {
        "index": str(directory),
        "retriever": retriever,
        "documents": len(r),
        "rejected": len(r.rejects),
        "seconds": round(elapsed, 2),
        "device": device,
    }
    if json_output:
        typer.echo(json.dumps(info))
        return
    where = f" on {device}" if device else ""
    msg = f"indexed {len(r)} documents with {retriever}{where} into {directory} in {elapsed:.1f} s"
    if r.rejects:
        msg += (
            f"; {len(r.rejects)} rows rejected (no text), listed in {directory / 'rejects.jsonl'}"
        )
    _console().print(msg)


def add(
    directory: Path = typer.Argument(..., help="An existing index directory."),
    corpus: Path = typer.Option(..., "--from", help="BEIR corpus.jsonl with the new documents."),
    model: str | None = typer.Option(
        None, "--model", help="Embedding model directory if it moved."
    ),
) -> None:
    """Add documents to an index; old documents are not re-embedded."""
    from hwkit.plugins.retrievers.documents import read_corpus
    from hwkit.plugins.retrievers.store import open_index
    from hwkit.runtime import current

    docs, rejects = read_corpus(corpus)
    rt = current()
    r: Any = open_index(directory, runtime=rt, **_model_override(directory, model, rt))
    if not r.supports_add:
        raise UsageError(f"the {r.name} retriever cannot add documents", hint="rebuild the index")
    before = len(r)
    r.add(docs)
    r.rejects = list(r.rejects) + list(rejects)
    r.save(directory)
    msg = f"added {len(r) - before} documents to {directory} ({len(r)} in all)"
    if rejects:
        msg += f"; {len(rejects)} rows rejected (no text)"
    _console().print(msg)


def info(
    directory: Path = typer.Argument(..., help="An index directory."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show an index's manifest after checking every file's checksum."""
    from hwkit.plugins.retrievers.store import read_manifest

    m = read_manifest(directory, verify=True)
    data = {
        "retriever": m.retriever,
        "format_version": m.format_version,
        "documents": m.doc_count,
        "rejected": m.rejected,
        "embedder": m.embedder,
        "options": m.options,
        "files": len(m.files),
    }
    if json_output:
        typer.echo(json.dumps(data, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"index {directory}", show_header=False)
    for key, value in data.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    _console().print(table)


def _model_override(directory: Path, model: str | None, runtime: Runtime) -> dict[str, Any]:
    """``--model``: the index's embedder on another model directory (the one it recorded
    moved), built by the core on ``runtime``; checked against the index when it loads."""
    if not model:
        return {}
    from hwkit.plugins.retrievers.embedding import make_embedder
    from hwkit.plugins.retrievers.store import read_manifest

    recorded = read_manifest(directory, verify=False).embedder or {}
    name = str(recorded.get("name") or "torch")
    return {"embedder": make_embedder(name, model, runtime=runtime)}


def search(
    directory: Path = typer.Argument(..., help="An index directory."),
    query: str = typer.Argument(..., help="The query text."),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="Number of hits."),
    model: str | None = typer.Option(
        None, "--model", help="Embedding model directory if it moved."
    ),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Search an index; prints id, score and the start of each document."""
    from hwkit.plugins.retrievers.documents import join_content
    from hwkit.plugins.retrievers.store import open_index
    from hwkit.runtime import current

    rt = current()
    r = open_index(directory, runtime=rt, **_model_override(directory, model, rt))
    hits = r.search(query, k=k)
    docs = r.documents([h.id for h in hits])
    out: list[dict[str, Any]] = [
        {"rank": n, "id": h.id, "score": h.score, "text": join_content(d.title, d.text)[:200]}
        for n, (h, d) in enumerate(zip(hits, docs, strict=True), start=1)
    ]
    if json_output:
        typer.echo(json.dumps(out))
        return
    from rich.table import Table

    table = Table(title=f"{r.name} search: {query[:60]}")
    for col in ("rank", "id", "score", "text"):
        table.add_column(col, overflow="fold")
    for row in out:
        table.add_row(str(row["rank"]), row["id"], f"{row['score']:.4f}", row["text"][:120])
    _console().print(table)


def evaluate(
    data: Path = typer.Option(..., "--data", help="BEIR dataset directory."),
    retriever: str = typer.Option(..., "--retriever", "-r", help=RETRIEVER_HELP),
    split: str = typer.Option("test", "--split", help="qrels split (qrels/<split>.tsv)."),
    ignore_identical_ids: bool = typer.Option(
        False, "--ignore-identical-ids", help="Drop hits whose document id equals the query id."
    ),
    embedder: str = typer.Option("torch", "--embedder", help="torch or openvino."),
    int8: str | None = typer.Option(None, "--int8", help=INT8_HELP),
    model: str | None = typer.Option(None, "--model", help="Embedding model directory."),
    rerank_model: str | None = typer.Option(
        None, "--rerank-model", help="Cross-encoder directory (rerank)."
    ),
    alpha: float | None = typer.Option(None, "--alpha", help="Hybrid dense weight in [0, 1]."),
    fusion: str | None = typer.Option(None, "--fusion", help="Hybrid fusion: convex or rrf."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Index the corpus, search every judged query, report nDCG@10, Recall@100, MRR@10, latency."""
    from hwkit.plugins.retrievers.beir import evaluate_retriever, load_beir
    from hwkit.runtime import current

    ds = load_beir(data, split)
    r = _make_retriever(
        retriever,
        runtime=current(),
        embedder=embedder,
        model=model,
        rerank_model=rerank_model,
        alpha=alpha,
        fusion=fusion,
        embedder_options=_embedder_options(retriever, embedder, int8, ds.corpus),
    )
    r.index(ds.corpus)
    result = evaluate_retriever(r, ds.queries, ds.qrels, ignore_identical_ids=ignore_identical_ids)
    payload = {
        "retriever": retriever,
        "data": str(data),
        "split": split,
        "documents": len(r),
        "rejected": len(ds.rejects),
        **result.to_dict(),
    }
    if json_output:
        typer.echo(json.dumps(payload, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{retriever} on {data.name} ({split}, {result.queries} queries)")
    for col in ("nDCG@10", "Recall@100", "MRR@10", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="right")
    m, lat = result.metrics, result.latency_ms
    table.add_row(
        f"{m['ndcg@10']:.4f}",
        f"{m['recall@100']:.4f}",
        f"{m['mrr@10']:.4f}",
        f"{lat['p50']:.2f}",
        f"{lat['p95']:.2f}",
        f"{lat['p99']:.2f}",
    )
    _console().print(table)


def register(app: typer.Typer) -> None:
    index_app.command("build")(build)
    index_app.command("add")(add)
    index_app.command("info")(info)
    retrieval_app.command("eval")(evaluate)
    app.add_typer(index_app, name="index")
    app.add_typer(retrieval_app, name="retrieval")
    app.command("search")(search)

"""Build a RAG pipeline from names: an index directory, a model, a grader.

The generator comes from the core (``hwkit.jobs.load_generator``: a ``generate`` plan puts
it on its device and runtime); the index's embedder and the cross-encoder from their own
plans. Nothing here picks a device.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hwkit.errors import UsageError
from hwkit.plugins.rag.pipeline import RagPipeline, RagSettings

if TYPE_CHECKING:
    from hwkit.inference import Generator
    from hwkit.plugins.rag.checks import Grader, Supporter
    from hwkit.retriever import Retriever
    from hwkit.runtime import Runtime

GRADERS = ("judge", "cross-encoder")
SUPPORTERS = ("overlap", "judge")


def open_retriever(
    index: str | Path, *, embedder_model: str | None = None, runtime: Runtime | None = None
) -> Retriever:
    """The index with the retriever its manifest names; ``embedder_model`` when the
    embedder it recorded moved (checked against the index's fingerprint as it loads)."""
    from hwkit.plugins.retrievers.cli import _model_override
    from hwkit.plugins.retrievers.store import open_index
    from hwkit.runtime import current

    rt = runtime or current()
    return open_index(Path(index), runtime=rt, **_model_override(Path(index), embedder_model, rt))


def make_grader(
    name: str, generator: Generator, *, model: str | None, runtime: Runtime | None = None
) -> Grader:
    from hwkit.plugins.rag.checks import CrossEncoderGrader, JudgeGrader

    if name == "judge":
        return JudgeGrader(generator)
    if name == "cross-encoder":
        if not model:
            raise UsageError(
                "the cross-encoder grader needs --rerank-model PATH",
                hint="a cross-encoder directory or an hwkit cross-encoder run",
            )
        return CrossEncoderGrader(model, runtime=runtime)
    raise UsageError(f"unknown grader {name!r}", hint=f"known: {', '.join(GRADERS)}")


def make_supporter(name: str, generator: Generator) -> Supporter:
    from hwkit.plugins.rag.checks import JudgeSupport, OverlapSupport

    if name == "overlap":
        return OverlapSupport()
    if name == "judge":
        return JudgeSupport(generator)
    raise UsageError(f"unknown support check {name!r}", hint=f"known: {', '.join(SUPPORTERS)}")


def open_pipeline(
    index: str | Path,
    model: str,
    settings: RagSettings | None = None,
    *,
    grader: str = "judge",
    rerank_model: str | None = None,
    support: str = "overlap",
    embedder_model: str | None = None,
    runtime_names: tuple[str, ...] = (),
    device: str | None = None,
    context: int | None = None,
    runtime: Runtime | None = None,
) -> RagPipeline:
    """A pipeline over ``index`` answering with ``model`` (a name, a directory, a run,
    a GGUF file or an OpenVINO IR), each part loaded through its plan."""
    from hwkit.jobs import load_generator

    settings = settings or RagSettings()
    if support not in SUPPORTERS:
        raise UsageError(
            f"unknown support check {support!r}", hint=f"known: {', '.join(SUPPORTERS)}"
        )
    retriever = open_retriever(index, embedder_model=embedder_model, runtime=runtime)
    generator = load_generator(
        model, runtime=runtime, device=device, context=context, runtimes=runtime_names
    )
    try:
        chosen = (
            make_grader(grader, generator, model=rerank_model, runtime=runtime)
            if (settings.reflect)
            else None
        )
        return RagPipeline(
            retriever,
            generator,
            settings,
            grader=chosen,
            supporter=make_supporter(support, generator),
        )
    except BaseException:
        generator.close()
        raise

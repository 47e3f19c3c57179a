"""Contract tests for :class:`hwkit.trainer.Trainer` that need no training run.

Fixture: ``trainer`` (an instance). The phase checks call ``resolve`` and ``job`` the way
``hwkit.jobs.train`` does, against the ``cpu`` profile; training behaviour itself
(``prepare`` and ``fit``) is each trainer's own test.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from hwkit.trainer import JobConfig, Trainer, TrainingData


def _resolved_default(trainer: Trainer) -> Any:
    """The default config as the job flow resolves it on a CPU-only machine."""
    from hwkit.testing import mock_device

    return trainer.resolve(trainer.config_model(), mock_device("cpu").profile)


class TrainerContract:
    def test_identity(self, trainer: Trainer) -> None:
        assert isinstance(trainer.name, str) and trainer.name

    def test_config_model_has_defaults(self, trainer: Trainer) -> None:
        assert issubclass(trainer.config_model, BaseModel)
        config = trainer.config_model()
        # A config round-trips through its JSON form (TOML files are validated the same way).
        again = trainer.config_model.model_validate_json(config.model_dump_json())
        assert again == config

    def test_config_rejects_unknown_fields(self, trainer: Trainer) -> None:
        import pytest
        from pydantic import ValidationError

        with pytest.raises(ValidationError):
            trainer.config_model.model_validate({"no_such_field_xyz": 1})

    def test_config_has_the_job_flow_fields(self, trainer: Trainer) -> None:
        # hwkit.jobs.train reads output_dir (the run directory) and device from every config.
        assert issubclass(trainer.config_model, JobConfig)

    def test_resolved_config_reads_back_from_config_toml(self, trainer: Trainer) -> None:
        import tomli_w
        import tomllib

        from hwkit.rundir import to_toml_dict

        config = _resolved_default(trainer)
        assert isinstance(config, trainer.config_model)
        # What the job flow writes as config.toml is a config the trainer accepts again.
        written = tomllib.loads(tomli_w.dumps(to_toml_dict(config)))
        assert trainer.config_model.model_validate(written) == config

    def test_job_of_the_default_config_is_a_training_job(self, trainer: Trainer) -> None:
        from hwkit.allocator import Job

        config = _resolved_default(trainer)
        job = trainer.job(config, TrainingData(train=[]))
        assert isinstance(job, Job) and job.trains, job

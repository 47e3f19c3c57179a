"""Contract tests for :class:`hwkit.trainer.Trainer` that need no training run.

Fixture: ``trainer`` (an instance). Training behaviour itself is each trainer's own test.
"""

from __future__ import annotations

from pydantic import BaseModel

from hwkit.trainer import Trainer


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

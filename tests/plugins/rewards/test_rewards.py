"""The built-in text-check rewards on hand-made inputs, and the composite reward: weighting,
fallbacks on a raise or NaN, and the errors of a bad config."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from hwkit.errors import ConfigError
from hwkit.hookspecs import hookimpl
from hwkit.log import run_log
from hwkit.plugin_manager import PluginManager
from hwkit.plugins.rewards.builtin import (
    JsonSchemaReward,
    JsonValidReward,
    LengthReward,
    NumericClosenessReward,
    RegexReward,
)
from hwkit.plugins.rewards.composite import RewardSpec, build_rewards, parse_specs
from hwkit.reward import Reward, RewardNotFitted

NO_ROW: dict[str, Any] = {}
SCHEMA = {
    "type": "object",
    "properties": {"handle": {"type": "string"}, "score": {"type": "number"}},
    "required": ["handle", "score"],
}


# -- a plugin of test rewards, registered through the hook ----------------------------------------
class Constant(Reward):
    name = "constant"
    description = "always the same"

    def __init__(self, **options: Any) -> None:
        self.value = float(options.pop("value", 1.0))
        super().__init__(**options)

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        return self.value


class Flaky(Reward):
    """Raises on completions containing "boom", NaN on "nan", inf on "inf", else 0.5."""

    name = "flaky"
    batch_calls = 0

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        if "boom" in completion:
            raise RuntimeError("cannot judge this one")
        if "nan" in completion:
            return math.nan
        if "inf" in completion:
            return math.inf
        return 0.5

    def score_batch(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> list[float]:
        type(self).batch_calls += 1
        return super().score_batch(prompts, completions, rows)


class Unready(Reward):
    name = "unready"

    def score(self, prompt: str, completion: str, row: Mapping[str, Any]) -> float:
        raise RewardNotFitted("fit first")


class TestRewardsPlugin:
    @staticmethod
    @hookimpl
    def hwkit_register_rewards(register: Any) -> None:
        register(Constant)
        register(Flaky)
        register(Unready)


@pytest.fixture(scope="module")
def plugins() -> PluginManager:
    manager = PluginManager(disabled=set()).load_entry_points()
    manager.register_plugin(TestRewardsPlugin(), "test-rewards")
    return manager.collect()


def test_the_hook_registers_the_builtins_and_a_plugins_rewards(plugins: PluginManager) -> None:
    names = plugins.rewards.names()
    builtins = {
        "json_valid",
        "json_schema",
        "numeric_closeness",
        "regex",
        "length",
        "reward_model",
        "llm_judge",
        "columns",
    }
    assert builtins <= set(names)
    assert {"constant", "flaky"} <= set(names)
    assert plugins.rewards.owner("json_valid") == "rewards"
    assert plugins.rewards.owner("flaky") == "test-rewards"
    assert not [f for f in plugins.failures if f.stage == "hwkit_register_rewards"]


def test_a_class_that_is_not_a_reward_is_refused(plugins: PluginManager) -> None:
    class Bad:
        @staticmethod
        @hookimpl
        def hwkit_register_rewards(register: Any) -> None:
            register(dict, name="not_a_reward")

    manager = PluginManager(disabled={"*"})
    manager.register_plugin(Bad(), "bad")
    manager.collect()
    assert "not_a_reward" not in manager.rewards
    (failure,) = [f for f in manager.failures if f.plugin == "bad"]
    assert "hwkit.reward.Reward" in failure.error


# -- built-ins -----------------------------------------------------------------------------------
def test_json_valid() -> None:
    loose, strict = JsonValidReward(), JsonValidReward(strict=True)
    assert loose.score("p", '{"score": 0.5}', NO_ROW) == 1.0
    assert loose.score("p", 'Here: {"score": 0.5} done', NO_ROW) == 1.0
    assert loose.score("p", "[1, 2]", NO_ROW) == 1.0
    assert loose.score("p", "{score: 0.5}", NO_ROW) == 0.0
    assert loose.score("p", "no json", NO_ROW) == 0.0
    assert strict.score("p", ' {"score": 0.5}\n', NO_ROW) == 1.0
    assert strict.score("p", 'Here: {"score": 0.5}', NO_ROW) == 0.0


def test_json_schema_inline_and_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA), encoding="utf-8")
    for reward in (JsonSchemaReward(schema=SCHEMA), JsonSchemaReward(schema_file=str(path))):
        assert reward.score("p", '{"handle": "a", "score": 0.9}', NO_ROW) == 1.0
        assert reward.score("p", 'Sure: {"handle": "a", "score": 0.9}', NO_ROW) == 1.0
        assert reward.score("p", '{"handle": "a", "score": "high"}', NO_ROW) == 0.0
        assert reward.score("p", '{"handle": "a"}', NO_ROW) == 0.0
        assert reward.score("p", "not json at all", NO_ROW) == 0.0


def test_json_schema_option_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of schema"):
        JsonSchemaReward()
    with pytest.raises(ConfigError, match="exactly one of schema"):
        JsonSchemaReward(schema=SCHEMA, schema_file="x.json")
    with pytest.raises(ConfigError, match="invalid schema"):
        JsonSchemaReward(schema={"type": "no-such-type"})
    with pytest.raises(ConfigError, match=r"unknown option 'schema_'; known: schema, schema_file"):
        JsonSchemaReward(schema_=SCHEMA)


def test_numeric_closeness_exact_values() -> None:
    reward = NumericClosenessReward(field="score")
    ref_text = {"reference": '{"handle": "a", "score": 0.80, "reason": "x"}'}
    assert reward.score("p", '{"score": 0.8}', ref_text) == pytest.approx(1.0)
    assert reward.score("p", '{"score": 0.5}', ref_text) == pytest.approx(0.7)
    assert reward.score("p", 'I think {"score": 0.95}', ref_text) == pytest.approx(0.85)
    assert reward.score("p", '{"score": "0.6"}', ref_text) == pytest.approx(0.8)
    assert reward.score("p", '{"score": 3.0}', ref_text) == 0.0  # floored at 0
    assert reward.score("p", '{"reason": "no score"}', ref_text) == 0.0  # unparsable -> 0
    assert reward.score("p", "not json", ref_text) == 0.0
    # the reference as a dict, a number, a numeric string; another column; another scale
    assert reward.score("p", '{"score": 0.5}', {"reference": {"score": 0.25}}) == 0.75
    assert reward.score("p", '{"score": 0.5}', {"reference": 0.1}) == pytest.approx(0.6)
    assert reward.score("p", '{"score": 0.5}', {"reference": "0.4"}) == pytest.approx(0.9)
    scaled = NumericClosenessReward(field="score", reference="gold", scale=10)
    assert scaled.score("p", '{"score": 7}', {"gold": 4}) == pytest.approx(0.7)
    with pytest.raises(KeyError, match="no 'reference' column"):
        reward.score("p", '{"score": 0.5}', NO_ROW)
    with pytest.raises(ValueError, match="holds no number"):
        reward.score("p", '{"score": 0.5}', {"reference": '{"other": 1}'})
    with pytest.raises(ConfigError, match="option scale"):
        NumericClosenessReward(field="score", scale=0)


def test_regex() -> None:
    search = RegexReward(pattern=r"\bscore\b")
    full = RegexReward(pattern=r"\{.*\}", full=True)
    caseless = RegexReward(pattern="SCORE", ignore_case=True)
    assert search.score("p", "the score is 3", NO_ROW) == 1.0
    assert search.score("p", "the scores", NO_ROW) == 0.0
    assert full.score("p", '  {"a": 1}\n', NO_ROW) == 1.0
    assert full.score("p", 'ok {"a": 1}', NO_ROW) == 0.0
    assert caseless.score("p", "a score", NO_ROW) == 1.0
    with pytest.raises(ConfigError, match="option pattern"):
        RegexReward(pattern="(unclosed")


def test_length_bounds_and_slack() -> None:
    words = LengthReward(min_words=3, max_words=5, slack=4)
    assert words.score("p", "one two three", NO_ROW) == 1.0
    assert words.score("p", "one two three four five", NO_ROW) == 1.0
    assert words.score("p", "one two", NO_ROW) == 0.75  # 1 short, slack 4
    assert words.score("p", " ".join(["w"] * 7), NO_ROW) == 0.5  # 2 over
    assert words.score("p", " ".join(["w"] * 20), NO_ROW) == 0.0
    chars = LengthReward(max_chars=10)  # no slack: a hard bound
    assert chars.score("p", "  0123456789  ", NO_ROW) == 1.0  # stripped
    assert chars.score("p", "0123456789x", NO_ROW) == 0.0
    assert LengthReward(min_chars=4, slack=2).score("p", "abc", NO_ROW) == 0.5
    with pytest.raises(ConfigError, match="not both"):
        LengthReward(min_chars=1, max_words=3)
    with pytest.raises(ConfigError, match="give min_chars"):
        LengthReward(slack=3)
    with pytest.raises(ConfigError, match="above the maximum"):
        LengthReward(min_words=5, max_words=2)


def test_unknown_options_list_the_known_ones() -> None:
    with pytest.raises(ConfigError) as err:
        LengthReward(max_words=3, tolerance=2)
    assert "unknown option 'tolerance'" in str(err.value)
    assert "known: max_chars, max_words, min_chars, min_words, slack" in str(err.value)
    with pytest.raises(ConfigError, match="unknown option 'x'; known: none"):
        Flaky(x=1)


# -- composite -----------------------------------------------------------------------------------
def test_composite_is_the_weighted_mean(plugins: PluginManager) -> None:
    composite = build_rewards(
        [
            {"name": "json_valid", "weight": 0.2},
            {"name": "numeric_closeness", "weight": 0.6, "options": {"field": "score"}},
            RewardSpec(name="constant", weight=0.2, options={"value": 0.25}),
        ],
        plugins,
    )
    rows = [{"reference": '{"score": 0.8}'}, {"reference": '{"score": 0.8}'}]
    values = composite(["p", "p"], ['{"score": 0.6}', "nothing"], rows)
    # 0.2*1 + 0.6*0.8 + 0.2*0.25 = 0.73 ; 0.2*0 + 0.6*0 + 0.2*0.25 = 0.05 ; weights sum to 1
    assert values == pytest.approx([0.73, 0.05])
    doubled = build_rewards(
        [{"name": "json_valid", "weight": 2}, {"name": "constant", "weight": 6}], plugins
    )
    assert doubled(["p"], ["{}"], [NO_ROW]) == pytest.approx([(2 * 1 + 6 * 1) / 8])
    assert doubled(["p"], ["x"], [NO_ROW]) == pytest.approx([6 / 8])
    stats = composite.stats()
    assert list(stats) == ["json_valid", "numeric_closeness", "constant"]
    assert stats["json_valid"] == {
        "reward": "json_valid",
        "weight": 0.2,
        "calls": 1,
        "items": 2,
        "failures": 0,
        "mean": 0.5,
    }
    assert stats["numeric_closeness"]["mean"] == pytest.approx(0.4)


def test_a_reward_that_raises_or_returns_nan_gets_the_fallback(
    plugins: PluginManager, tmp_path: Path
) -> None:
    composite = build_rewards(
        [
            {"name": "flaky", "weight": 1.0, "fallback": -1.0},
            {"name": "constant", "weight": 1.0},
        ],
        plugins,
    )
    completions = ["fine", "boom", "nan here", "fine too", "inf"]
    Flaky.batch_calls = 0
    with run_log(tmp_path / "log.jsonl") as path:
        values = composite(["p"] * 5, completions, [NO_ROW] * 5)
    logs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    # the batch raised: each completion scored alone, only the failing ones fall back
    assert values == pytest.approx([0.75, 0.0, 0.0, 0.75, 0.0])
    assert composite.last_failed == [False, True, True, False, True]
    flaky = composite.components[0]
    assert (flaky.name, flaky.weight, flaky.fallback, flaky.failures) == ("flaky", 1.0, -1.0, 3)
    assert composite.failures == 3
    assert Flaky.batch_calls == 1
    failed = [e for e in logs if e["event"] == "reward.failed"]
    assert len(failed) == 1  # once per batch, with a count
    assert failed[0]["reward"] == "flaky" and failed[0]["failed"] == 3 and failed[0]["batch"] == 5
    assert "cannot judge this one" in failed[0]["error"]
    # a batch where only NaN comes back (no raise): counted too, the run goes on
    assert composite(["p"], ["nan"], [NO_ROW]) == pytest.approx([0.0])
    assert composite.stats()["flaky"]["failures"] == 4
    assert composite.stats()["flaky"]["items"] == 6
    assert composite.stats()["flaky"]["calls"] == 2


def test_setup_errors_are_not_swallowed(plugins: PluginManager) -> None:
    composite = build_rewards([{"name": "unready"}], plugins)
    with pytest.raises(RewardNotFitted):
        composite(["p"], ["c"], [NO_ROW])


def test_an_unknown_reward_name_lists_the_registered(plugins: PluginManager) -> None:
    with pytest.raises(ConfigError) as err:
        build_rewards([{"name": "json_valid"}, {"name": "bleu"}], plugins)
    message = err.value.message
    assert message.startswith("unknown reward 'bleu'; registered: ")
    listed = message.split("registered: ", 1)[1].split(", ")
    assert listed == plugins.rewards.names() and "json_valid" in listed
    assert "reward[1].name" in str(err.value)


@pytest.mark.parametrize(
    ("specs", "match"),
    [
        ([{"name": "json_valid", "weight": 0}], r"weights sum to 0; .*reward\[0\]\.weight=0"),
        (
            [{"name": "json_valid", "weight": 1}, {"name": "regex", "weight": -1}],
            r"weights sum to 0;.*reward\[1\]\.weight=-1",
        ),
        ([{"name": "json_valid", "weight": math.nan}], r"reward\[0\]\.weight .*finite.*nan"),
        ([{"name": "json_valid", "weight": math.inf}], r"reward\[0\]\.weight .*finite.*inf"),
        ([{"name": "json_valid", "fallback": math.nan}], r"reward\[0\]\.fallback .*finite"),
        ([{"name": "json_valid", "weight": "heavy"}], r"reward\[0\]\.weight: .*number"),
        ([{"name": "json_valid", "wieght": 1}], r"reward\[0\]\.wieght: .*[Ee]xtra"),
        ([], "no rewards configured"),
    ],
)
def test_bad_weights_and_specs_name_the_field(
    plugins: PluginManager, specs: list[dict[str, Any]], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        build_rewards(specs, plugins)


def test_a_rewards_bad_option_names_the_entry(plugins: PluginManager) -> None:
    with pytest.raises(ConfigError, match=r"reward\[1\]: reward 'regex': unknown option 'pat'"):
        build_rewards([{"name": "json_valid"}, {"name": "regex", "options": {"pat": "x"}}], plugins)


def test_parse_specs_keeps_order_and_defaults() -> None:
    specs = parse_specs([{"name": "a"}, {"name": "b", "weight": 3, "fallback": 0.5}])
    assert [(s.name, s.weight, s.fallback, s.options) for s in specs] == [
        ("a", 1.0, 0.0, {}),
        ("b", 3.0, 0.5, {}),
    ]

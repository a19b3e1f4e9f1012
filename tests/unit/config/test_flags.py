"""Flag config: the documented example parses, mistakes are errors that name the field."""

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from serving.config.flags import (
    BreakerConfig,
    CacheConfig,
    EligibilityRule,
    EnsembleFlag,
    FlagConfig,
    FlagConfigError,
    ShadowConfig,
    TimeWindow,
    dump_flag_config,
    load_flag_config,
    parse_flag_config,
)

REPO = Path(__file__).resolve().parents[3]

EXAMPLE = """
ensemble:
  enabled: true
  rollout_percentage: 10
  allowed_users: [beta_testers, alice]
  groups: {beta_testers: [bob, carol]}
  fallback: classic
  shadow: {enabled: false, sample_rate: 1.0, max_in_flight: 32}
  deadline_ms: 500
  eligibility:
    - {attribute: tier, in: [paid, enterprise]}
    - {time_window: {days: [mon, tue, wed, thu, fri], from: "08:00", to: "18:00", timezone: Europe/Amsterdam}}
"""  # noqa: E501 (the documented example, verbatim)


def problems_of(data) -> str:
    with pytest.raises(FlagConfigError) as caught:
        parse_flag_config(data)
    return str(caught.value)


def test_example_parses(tmp_path):
    path = tmp_path / "flags.yaml"
    path.write_text(EXAMPLE)
    cfg = load_flag_config(path)
    assert cfg.flag == "ensemble"
    assert cfg.ensemble.groups == {"beta_testers": ["bob", "carol"]}
    tier, hours = cfg.ensemble.eligibility
    assert (tier.attribute, tier.in_, tier.time_window) == ("tier", ["paid", "enterprise"], None)
    assert hours.time_window.from_ == "08:00"
    assert hours.time_window.days == ["mon", "tue", "wed", "thu", "fri"]
    assert hours.time_window.timezone == "Europe/Amsterdam"


def test_shipped_flags_file_parses():
    cfg = load_flag_config(REPO / "config" / "flags.yaml")
    assert cfg.ensemble.rollout_percentage == 10
    assert cfg.ensemble.allowed_users == ["beta_testers"]
    assert cfg.ensemble.eligibility == []


def test_the_documented_cost_section_is_the_default():
    """config/flags.yaml documents the cost section as comments; uncommented, it is the default."""
    text = (REPO / "config" / "flags.yaml").read_text().split("# cost:\n", 1)[1]
    block = "cost:\n" + "\n".join(line.removeprefix("# ") for line in text.splitlines())
    cfg = parse_flag_config(yaml.safe_load(block))
    assert cfg.cost == FlagConfig().cost
    assert cfg.cost.apps.ensemble.cpu == 0.5 and cfg.cost.prices.active_vcpu_second == 0.000024


def test_the_shipped_retraining_and_challenger_sections_are_the_defaults():
    cfg = load_flag_config(REPO / "config" / "flags.yaml")
    assert cfg.retraining == FlagConfig().retraining and cfg.challenger == FlagConfig().challenger
    assert cfg.experiment is None  # documented as a comment: two arms unless one is configured


def test_empty_or_missing_mapping_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_flag_config(path) == parse_flag_config(None) == FlagConfig()


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"ensemble": {"rollout_precentage": 5}}, "ensemble.rollout_precentage"),
        ({"ensemble": {"shadow": {"sample": 0.5}}}, "ensemble.shadow.sample"),
        ({"cache": {"ttl": 5}}, "cache.ttl"),
        ({"ensmble": {}}, "ensmble"),
        (
            {"ensemble": {"eligibility": [{"attribute": "tier", "in": ["a"], "x": 1}]}},
            "ensemble.eligibility[0].x",
        ),
    ],
)
def test_unknown_key_is_rejected_with_its_path(data, path):
    assert f"{path}: unknown key" in problems_of(data)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"ensemble": {"rollout_percentage": 150}},
            "ensemble.rollout_percentage: Input should be less than or equal to 100",
        ),
        (
            {"ensemble": {"rollout_percentage": -1}},
            "ensemble.rollout_percentage: Input should be greater than or equal to 0",
        ),
        ({"ensemble": {"deadline_ms": 0}}, "ensemble.deadline_ms: Input should be greater than 0"),
        ({"ensemble": {"fallback": "ensemble"}}, "ensemble.fallback: Input should be 'classic'"),
        ({"ensemble": {"shadow": {"sample_rate": 1.5}}}, "ensemble.shadow.sample_rate"),
        ({"ensemble": {"breaker": {"failure_threshold": 0}}}, "ensemble.breaker.failure_threshold"),
        ({"cache": {"max_entries": -1}}, "cache.max_entries"),
        ({"flag": ""}, "flag:"),
    ],
)
def test_out_of_range_values_are_rejected(data, expected):
    assert expected in problems_of(data)


def window(**overrides):
    return {
        "ensemble": {
            "eligibility": [
                {"time_window": {"from": "08:00", "to": "18:00", "timezone": "UTC", **overrides}}
            ]
        }
    }


def test_bad_timezone_is_rejected():
    message = problems_of(window(timezone="Europe/Amsterdamm"))
    assert (
        "ensemble.eligibility[0].time_window.timezone: unknown time zone 'Europe/Amsterdamm'"
        in message
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"from": "8:00"}, 'expected "HH:MM"'),
        ({"to": "24:00"}, 'expected "HH:MM"'),
        ({"to": 1080}, "quote times"),  # what YAML makes of an unquoted 18:00
        ({"to": "08:00"}, "window would be empty"),
        ({"days": ["monday"]}, "time_window.days[0]"),
        ({"days": []}, "time_window.days"),
    ],
)
def test_bad_time_window_is_rejected(overrides, expected):
    assert expected in problems_of(window(**overrides))


def test_unquoted_yaml_time_gets_a_helpful_error(tmp_path):
    path = tmp_path / "flags.yaml"
    path.write_text(EXAMPLE.replace('to: "18:00"', "to: 18:00"))
    with pytest.raises(FlagConfigError, match="quote times"):
        load_flag_config(path)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {
                "attribute": "tier",
                "in": ["paid"],
                "time_window": {"from": "08:00", "to": "18:00", "timezone": "UTC"},
            },
            "not both",
        ),
        ({"attribute": "tier"}, "needs both 'attribute' and 'in'"),
        ({"in": ["paid"]}, "needs both 'attribute' and 'in'"),
        ({}, "needs {attribute, in} or {time_window}"),
        ({"attribute": "tier", "in": []}, "ensemble.eligibility[0].in"),
    ],
)
def test_eligibility_rule_must_be_exactly_one_kind(rule, expected):
    assert expected in problems_of({"ensemble": {"eligibility": [rule]}})


def test_every_problem_is_reported_on_its_own_line():
    with pytest.raises(FlagConfigError) as caught:
        parse_flag_config({"ensemble": {"rollout_percentage": 150, "deadline_ms": -5}})
    assert [line.split(":")[0] for line in caught.value.problems] == [
        "ensemble.rollout_percentage",
        "ensemble.deadline_ms",
    ]


def test_non_mapping_is_rejected():
    assert "expected a mapping" in problems_of(["ensemble"])


def test_missing_file_and_bad_yaml_are_config_errors(tmp_path):
    with pytest.raises(FlagConfigError, match="cannot read"):
        load_flag_config(tmp_path / "absent.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("ensemble: {enabled: true\n")
    with pytest.raises(FlagConfigError, match="invalid YAML"):
        load_flag_config(path)


def test_invalid_file_content_names_the_file(tmp_path):
    path = tmp_path / "flags.yaml"
    path.write_text("ensemble: {rollout_percentage: 150}\n")
    with pytest.raises(FlagConfigError, match=r"flags\.yaml: invalid flag config"):
        load_flag_config(path)


def test_dump_uses_yaml_spelling_and_round_trips():
    cfg = parse_flag_config(yaml.safe_load(EXAMPLE))
    dumped = dump_flag_config(cfg)
    tier, hours = dumped["ensemble"]["eligibility"]
    assert tier == {"attribute": "tier", "in": ["paid", "enterprise"]}
    assert hours["time_window"]["from"] == "08:00"
    assert parse_flag_config(yaml.safe_load(yaml.safe_dump(dumped))) == cfg


def test_python_field_names_are_accepted_too():
    rule = EligibilityRule(attribute="tier", in_=["paid"])
    assert rule == EligibilityRule.model_validate({"attribute": "tier", "in": ["paid"]})


@pytest.mark.parametrize(
    "model",
    [
        ShadowConfig,
        BreakerConfig,
        CacheConfig,
        TimeWindow,
        EligibilityRule,
        EnsembleFlag,
        FlagConfig,
    ],
)
def test_every_field_is_documented(model):
    assert all(info.description for info in model.model_fields.values())


def at(day: int, hh_mm: str, zone: str = "UTC") -> datetime:
    """A moment in November 2025 (day 3 is a Monday)."""
    hours, minutes = map(int, hh_mm.split(":"))
    return datetime(2025, 11, day, hours, minutes, tzinfo=ZoneInfo(zone))


def test_time_window_reads_the_moment_in_its_own_zone():
    weekdays = TimeWindow.model_validate(
        {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "from": "08:00",
            "to": "18:00",
            "timezone": "Europe/Amsterdam",
        }
    )
    assert weekdays.contains(at(3, "07:00"))  # 08:00 in Amsterdam (CET, UTC+1)
    assert not weekdays.contains(at(3, "06:59"))
    assert not weekdays.contains(at(3, "17:00"))  # 18:00 in Amsterdam: `to` is excluded
    assert not weekdays.contains(at(8, "12:00"))  # Saturday
    assert weekdays.contains(datetime(2025, 11, 3, 12, 0))  # naive means UTC


def test_overnight_window_belongs_to_the_day_it_opens():
    friday_night = TimeWindow.model_validate(
        {"days": ["fri"], "from": "22:00", "to": "06:00", "timezone": "UTC"}
    )
    assert friday_night.contains(at(7, "23:00"))
    assert friday_night.contains(at(8, "05:59"))  # Saturday morning
    assert not friday_night.contains(at(8, "06:00"))
    assert not friday_night.contains(at(7, "05:00"))  # Friday morning belongs to Thursday night
    assert not friday_night.contains(at(8, "23:00"))


def test_config_is_validated_on_assignment():
    cfg = FlagConfig()
    with pytest.raises(ValueError):
        cfg.ensemble.rollout_percentage = 150
    assert cfg.ensemble.rollout_percentage == 10

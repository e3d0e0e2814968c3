"""Scenario validation: every mistake is named by file and field."""

from __future__ import annotations

import pytest
import yaml

from simulations.scenario import ScenarioError, load_scenario, parse_scenario
from simulations.workload import build_workload
from tests.sim.conftest import SCENARIOS

EXAMPLE = SCENARIOS / "example_generic.yaml"


def doc() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def failure(tmp_path, changes: dict, build: bool = False) -> ScenarioError:
    path = tmp_path / "s.yaml"
    raw = doc()
    raw["trace"]["jobs"] = str(SCENARIOS / "data" / "example_jobs.csv")
    raw["trace"]["nodes"] = str(SCENARIOS / "data" / "example_nodes.csv")
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError) as exc:
        scenario = load_scenario(path)
        if build:
            build_workload(scenario)
    assert exc.value.source == str(path)
    return exc.value


DELETE = object()


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
        ({"trace.kind": "borg"}, "trace.kind", "Input should be"),
        ({"trace.gpu_model": DELETE}, "trace.gpu_model", "Field required"),
        ({"what_if": [{"scale_price": {"factor": -1}}]}, "what_if[0].scale_price.factor", "greater than 0"),
        (
            {"what_if": [{"scale_price": {"factor": 2}, "forbid": {"region": "eu-west"}}]},
            "what_if[0]",
            "exactly one knob",
        ),
        ({"what_if": [{"forbid": {"region": "eu-west", "jurisdiction": "EU"}}]}, "what_if[0].forbid", "exactly one of"),
        ({"workload.deadlines.slack_min": 0.5}, "workload.deadlines.slack_min", "greater than or equal to 1"),
        ({"workload.tags": {"team": {"values": {"a": 1}, "from_group": True}}}, "workload.tags.team", "either values"),
        ({"scheduler.placer": "magic"}, "scheduler.placer", "unknown placer 'magic'"),
        ({"scheduler.cycle": {"max_batch": 0}}, "scheduler.cycle.max_batch", "greater than or equal to 1"),
        ({"scheduler.store_url": "redis://x"}, "scheduler.store_url", "in-memory store"),
        ({"catalog.onprem.0.name": "Bad Name"}, "catalog.onprem[0].name", "should match pattern"),
    ],
)
def test_schema_errors_name_the_field(tmp_path, changes, field, message):
    err = failure(tmp_path, changes)
    assert err.field == field and message in err.message


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"workload.data.groups.0.home_sites": {"atlantis": 1.0}},
            "workload.data.groups[0].home_sites.atlantis",
            "unknown site",
        ),
        (
            {"what_if": [{"add_gpus": {"site": "nowhere", "gpu_model": "A100-80GB", "gpus": 8}}]},
            "what_if[0].add_gpus.site",
            "unknown site",
        ),
        (
            {"what_if": [{"add_gpus": {"site": "dc", "gpu_model": "H100-80GB", "gpus": 8}}]},
            "what_if[0].add_gpus.usd_per_gpu_hour",
            "price the new one",
        ),
        ({"what_if": [{"forbid": {"sites": "mars-*"}}]}, "what_if[0].forbid", "matches no site"),
        ({"what_if": [{"egress": {"sites": "dc"}}]}, "what_if[0].egress", "at least one tariff"),
        (
            {"catalog.onprem.0.usd_per_gpu_hour": {"A100-80GB": 1.0}},
            "catalog.onprem[0].usd_per_gpu_hour",
            "no price for GPU model 'L40S'",
        ),
        ({"trace.gpu_model": "V100"}, "trace.gpu_model", "not a GPU model of the catalog"),
        ({"trace.jobs": "missing.csv"}, "trace.jobs", "no such file"),
        ({"catalog.onprem.0.region": "mars"}, "catalog.onprem[0].rtt_ms", "no base site in region 'mars'"),
    ],
)
def test_build_errors_name_the_field(tmp_path, changes, field, message):
    err = failure(tmp_path, changes, build=True)
    assert err.field == field and message in err.message


def test_bad_yaml_and_top_level(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"s\.yaml: <yaml>:"):
        load_scenario(path)
    path.write_text("- a list\n")
    with pytest.raises(ScenarioError, match=r"<root>: expected a mapping"):
        load_scenario(path)


def test_overrides_are_validated_like_the_file():
    with pytest.raises(ScenarioError, match=r"trace\.limit: Input should be greater than or equal to 1"):
        load_scenario(EXAMPLE, {"trace.limit": 0})
    s = load_scenario(EXAMPLE, {"scheduler.placer": "egress-blind", "trace.limit": 5})
    assert s.settings.placer == "egress-blind" and s.spec.trace.limit == 5


def test_environment_does_not_change_a_scenario(monkeypatch):
    monkeypatch.setenv("GRAVITY_PLACER", "egress-blind")
    monkeypatch.setenv("GRAVITY_CYCLE__MAX_BATCH", "7")
    s = load_scenario(EXAMPLE)
    assert s.settings.placer == "greedy" and s.settings.cycle.max_batch != 7


def test_paths_expand_variables(monkeypatch, tmp_path):
    raw = doc()
    raw["trace"]["jobs"] = "${MY_TRACES}/example_jobs.csv"
    raw["trace"]["nodes"] = "${MISSING_VAR:-" + str(SCENARIOS / "data") + "}/example_nodes.csv"
    monkeypatch.setenv("MY_TRACES", str(SCENARIOS / "data"))
    s = parse_scenario(raw, "mem.yaml", tmp_path)
    assert s.path(s.spec.trace.jobs, "trace.jobs") == SCENARIOS / "data" / "example_jobs.csv"
    assert s.path(s.spec.trace.nodes or "", "trace.nodes") == SCENARIOS / "data" / "example_nodes.csv"
    monkeypatch.delenv("MY_TRACES")
    with pytest.raises(ScenarioError, match=r"trace\.jobs: environment variable MY_TRACES is not set"):
        s.path(s.spec.trace.jobs, "trace.jobs")

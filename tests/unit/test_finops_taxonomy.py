"""The tag taxonomy: required tags and allowed values, checked at admission, named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from placers.catalog import Catalog
from placers.registry import make_placer
from scheduler.admission import InvalidSpec, validate, validate_batch
from scheduler.executors.sim import SimExecutor
from scheduler.finops.governance import Governance
from scheduler.service import SchedulerService
from scheduler.settings import CycleSettings, FinOpsSettings, SettingsError, TagRule, load_settings
from scheduler.store.memory import MemoryStore
from tests.conftest import spec

NOW = 1_800_000_000.0
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finops-settings.yaml"

TAXONOMY = {
    "cost_center": TagRule(pattern=r"cc-[0-9]{4}"),
    "project": TagRule(),
    "stage": TagRule(allowed=["dev", "staging", "prod"]),
    "workload_type": TagRule(required=False, allowed=["training", "inference"], pattern=r"batch-.*"),
}
GOOD = {"cost_center": "cc-1234", "project": "llm", "stage": "prod"}


def check(catalog: Catalog, tags: dict[str, str]) -> None:
    validate(spec(tags=tags), catalog, NOW, TAXONOMY)


@pytest.mark.parametrize(
    ("tags", "field", "message"),
    [
        ({"project": "llm", "stage": "prod"}, "tags.cost_center", "required tag missing (matching /cc-[0-9]{4}/)"),
        ({**GOOD, "cost_center": ""}, "tags.cost_center", "required tag missing"),
        ({**GOOD, "cost_center": "cc-12"}, "tags.cost_center", "value 'cc-12' is not allowed (expected matching"),
        ({**GOOD, "stage": "qa"}, "tags.stage", "value 'qa' is not allowed (expected one of dev, staging, prod)"),
        ({"cost_center": "cc-1234", "stage": "dev"}, "tags.project", "required tag missing"),
        (
            {**GOOD, "workload_type": "serving"},
            "tags.workload_type",
            "value 'serving' is not allowed (expected one of training, inference or matching /batch-.*/)",
        ),
    ],
)
def test_taxonomy_errors_name_the_tag(catalog, tags, field, message):
    with pytest.raises(InvalidSpec) as err:
        check(catalog, tags)
    assert err.value.field == field
    assert err.value.message.startswith(message), err.value.message


def test_taxonomy_accepts_good_tags_and_optional_ones(catalog):
    check(catalog, GOOD)
    check(catalog, {**GOOD, "workload_type": "inference"})
    check(catalog, {**GOOD, "workload_type": "batch-nightly"})  # matches the pattern though not listed
    check(catalog, {**GOOD, "anything_else": "free-form"})


def test_no_taxonomy_accepts_any_tags(catalog):
    validate(spec(tags={}), catalog, NOW)
    validate(spec(tags={}), catalog, NOW, {})


def test_batch_error_names_the_spec_and_the_tag(catalog):
    with pytest.raises(InvalidSpec) as err:
        validate_batch([spec(tags=GOOD), spec(tags={})], catalog, NOW, taxonomy=TAXONOMY)
    assert str(err.value) == "specs[1].tags.cost_center: required tag missing (matching /cc-[0-9]{4}/)"


def test_service_refuses_untagged_submissions(catalog, clock):
    store = MemoryStore(catalog)
    gov = Governance(store, catalog, clock, FinOpsSettings(tags=TAXONOMY))
    svc = SchedulerService(
        catalog, store, SimExecutor(clock, catalog), make_placer("greedy"), clock, CycleSettings(), governance=gov
    )
    with pytest.raises(InvalidSpec, match=r"^tags\.project: required tag missing$"):
        svc.submit([spec(tags={"cost_center": "cc-0001", "stage": "dev"})])
    with pytest.raises(InvalidSpec, match=r"tags\.stage"):
        svc.explain_spec(spec(tags={**GOOD, "stage": "nope"}))
    ((_, created),) = svc.submit([spec(tags=GOOD)])
    assert created


def test_bad_rules_are_settings_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finops:\n  tags:\n    cost_center: {pattern: 'cc-[0-9'}\n")
    with pytest.raises(SettingsError, match=r"finops\.tags\.cost_center\.pattern.*regular expression"):
        load_settings(str(bad))
    bad.write_text("finops:\n  tags:\n    cost_center: {requird: true}\n")
    with pytest.raises(SettingsError, match=r"finops\.tags\.cost_center\.requird"):
        load_settings(str(bad))
    bad.write_text("finops:\n  budgets:\n    - {value: a, amount_usd: 1}\n    - {value: a, amount_usd: 2}\n")
    with pytest.raises(SettingsError, match="listed twice"):
        load_settings(str(bad))


def test_default_settings_have_no_taxonomy_and_the_example_loads(catalog):
    assert load_settings().finops.tags == {}
    s = load_settings(str(EXAMPLE))
    assert set(s.finops.tags) == {"project", "cost_center", "workload_type", "stage"}
    assert s.metrics_port == 9464 and len(s.finops.budgets) == 3
    ok = {"project": "support-assistant", "cost_center": "cc-4411", "workload_type": "fine-tuning", "stage": "dev"}
    validate(spec(tags=ok), catalog, NOW, s.finops.tags)
    with pytest.raises(InvalidSpec, match=r"tags\.cost_center"):
        validate(spec(tags={**ok, "cost_center": "4411"}), catalog, NOW, s.finops.tags)

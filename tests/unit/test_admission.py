from __future__ import annotations

import pytest

from placers.domain import Dataset, InferenceSpec, JobKind
from scheduler.admission import InvalidSpec, validate, validate_batch
from tests.conftest import spec

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": " "}, "name"),
        ({"gpus": 0}, "gpus"),
        ({"gpus": -2}, "gpus"),
        ({"gpu_milli": 0}, "gpu_milli"),
        ({"gpu_milli": 500, "gpus": 2}, "gpu_milli"),
        ({"gpu_models": ("A100-80GB", "H900")}, "gpu_models[1]"),
        ({"cpus": -1.0}, "cpus"),
        ({"memory_gb": float("nan")}, "memory_gb"),
        ({"runtime_s": 0.0}, "runtime_s"),
        ({"deadline_at": NOW - 1}, "deadline"),
        ({"priority": 5000}, "priority"),
        ({"datasets": ("imagenet-21k", "no-such-data")}, "datasets[1].catalog_id"),
        ({"datasets": (Dataset("x", 0.0, ("onprem-sjc",)),)}, "datasets[0].inline.size_gb"),
        ({"datasets": (Dataset("x", 1.0, ()),)}, "datasets[0].inline.replica_sites"),
        ({"datasets": (Dataset("x", 1.0, ("mars",)),)}, "datasets[0].inline.replica_sites[0]"),
        ({"datasets": ("imagenet-21k", "imagenet-21k")}, "datasets[1]"),
        ({"allowed_jurisdictions": ("APAC",)}, "allowed_jurisdictions[0]"),
        ({"allowed_sites": ("aws-mars-1",)}, "allowed_sites[0]"),
        ({"max_cost_usd": 0.0}, "max_cost_usd"),
        ({"inference": InferenceSpec()}, "inference"),
        ({"entrypoint": ""}, "entrypoint"),
        ({"env": {"1BAD": "x"}}, "env.1BAD"),
        ({"request_id": "r" * 200}, "request_id"),
        ({"max_retries": -1}, "max_retries"),
        ({"tags": {"a=b": "c"}}, "tags.a=b"),
    ],
)
def test_bad_specs_name_the_field(catalog, changes, field):
    with pytest.raises(InvalidSpec) as err:
        validate(spec(**changes), catalog, NOW)
    assert err.value.field == field, str(err.value)


@pytest.mark.parametrize(
    ("inference", "field"),
    [
        (InferenceSpec(latency_slo_ms=10), "inference.user_regions"),
        (InferenceSpec(latency_slo_ms=10, user_regions=("moon",)), "inference.user_regions[0]"),
        (InferenceSpec(replicas=0), "inference.replicas"),
        (InferenceSpec(latency_slo_ms=-1), "inference.latency_slo_ms"),
    ],
)
def test_bad_inference_specs(catalog, inference, field):
    with pytest.raises(InvalidSpec) as err:
        validate(spec(kind=JobKind.INFERENCE, runtime_s=0, inference=inference), catalog, NOW)
    assert err.value.field == field


def test_inference_has_no_deadline(catalog):
    with pytest.raises(InvalidSpec, match="deadline"):
        validate(spec(kind=JobKind.INFERENCE, deadline_at=NOW + 10, inference=InferenceSpec()), catalog, NOW)


def test_good_specs_pass(catalog):
    validate(spec(), catalog, NOW)
    validate(
        spec(
            gpus=8,
            single_node=True,
            gpu_models=("H100-80GB",),
            datasets=("eu-customer-support-2026", Dataset("mine", 5.0, ("aws-us-east-1",), "internal")),
            deadline_at=NOW + 3600,
            max_cost_usd=100.0,
            tags={"project": "p", "cost_center": "cc"},
        ),
        catalog,
        NOW,
    )
    validate(spec(gpus=1, gpu_milli=250), catalog, NOW)


def test_batch_error_names_the_index(catalog):
    with pytest.raises(InvalidSpec) as err:
        validate_batch([spec(), spec(), spec(gpus=0)], catalog, NOW)
    assert err.value.field == "specs[2].gpus"

"""Job files (YAML) -> gravity.v1.JobSpec: the friendly forms, and errors that name the file and field."""

from __future__ import annotations

import io
import shlex
from pathlib import Path

import pytest

from gravity.v1 import scheduler_pb2 as pb
from placers.catalog import load_catalog
from placers.domain import JobKind
from scheduler.admission import InvalidSpec, validate
from scheduler.api import convert
from scheduler.api.jobfile import JobFileError, load_job_file, parse_job_text

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "jobs"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z

BASE = "name: j\nkind: batch\ngpus: 1\nruntime: 1h\nentrypoint: 'true'\n"


def one(text: str) -> pb.JobSpec:
    specs = parse_job_text(text, "job.yaml", now=NOW)
    assert len(specs) == 1
    return specs[0]


def with_line(line: str) -> str:
    """BASE with `line` in place of BASE's line for the same key (or added)."""
    key = line.split(":", 1)[0]
    return "".join(x + "\n" for x in BASE.splitlines() if not x.startswith(f"{key}:")) + line + "\n"


def error(text: str, source: str = "job.yaml") -> str:
    with pytest.raises(JobFileError) as info:
        parse_job_text(text, source, now=NOW)
    return str(info.value)


# ---------------------------------------------------------------------- the sample jobs


def test_every_sample_is_a_spec_the_scheduler_accepts_except_bad_gpus() -> None:
    catalog = load_catalog()
    names = sorted(p.name for p in EXAMPLES.glob("*.yaml"))
    assert names == [
        "bad-gpus.yaml",
        "batch-deadline.yaml",
        "eu-training.yaml",
        "inference-latency.yaml",
        "us-only-eu-data.yaml",
    ]
    for name in names:
        (m,) = load_job_file(str(EXAMPLES / name), now=NOW)
        spec = convert.spec_from_proto(m)
        if name == "bad-gpus.yaml":
            with pytest.raises(InvalidSpec) as info:
                validate(spec, catalog, NOW)
            assert info.value.field == "gpus"
        else:
            validate(spec, catalog, NOW)  # raises on anything admission refuses


def test_eu_training_sample() -> None:
    (m,) = load_job_file(str(EXAMPLES / "eu-training.yaml"), now=NOW)
    assert m.kind == pb.JOB_KIND_TRAINING
    assert (m.gpus, m.single_node, m.runtime_s) == (8, True, 6 * 3600.0)
    assert [d.catalog_id for d in m.datasets] == ["eu-customer-support-2026"]
    assert (m.tags.project, m.tags.cost_center, m.tags.team) == ("support-assistant", "cc-4411", "ml-eu")
    assert dict(m.tags.extra) == {"owner": "ana"}
    assert dict(m.env) == {"EPOCHS": "3"}
    assert shlex.split(m.entrypoint)[:2] == ["python3", "-c"]
    assert not m.HasField("deadline")


def test_batch_deadline_sample_is_relative_to_now() -> None:
    (m,) = load_job_file(str(EXAMPLES / "batch-deadline.yaml"), now=NOW)
    assert m.kind == pb.JOB_KIND_BATCH
    assert m.deadline.seconds == NOW + 3 * 3600
    assert [d.catalog_id for d in m.datasets] == ["imagenet-21k"]


def test_inference_sample() -> None:
    (m,) = load_job_file(str(EXAMPLES / "inference-latency.yaml"), now=NOW)
    spec = convert.spec_from_proto(m)
    assert spec.kind is JobKind.INFERENCE
    assert spec.inference is not None
    assert spec.inference.latency_slo_ms == 20
    assert spec.inference.user_regions == ("eu-west", "eu-central")
    assert (spec.inference.replicas, spec.inference.dedicated) == (2, True)


def test_us_only_sample_asks_for_us_with_eu_data() -> None:
    (m,) = load_job_file(str(EXAMPLES / "us-only-eu-data.yaml"), now=NOW)
    assert list(m.allowed_jurisdictions) == ["US"]
    assert [d.catalog_id for d in m.datasets] == ["eu-customer-support-2026"]


# ---------------------------------------------------------------------- friendly forms


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("6h", 21600), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("45s", 45), ("1.5h", 5400), (90, 90)],
)
def test_runtime_durations(written: object, seconds: float) -> None:
    assert one(BASE.replace("runtime: 1h", f"runtime: {written}")).runtime_s == seconds


def test_runtime_s_is_taken_as_written() -> None:
    assert one(BASE.replace("runtime: 1h", "runtime_s: 7200.5")).runtime_s == 7200.5


@pytest.mark.parametrize(
    ("written", "seconds"),
    [
        ("+6h", NOW + 21600),
        ("+30m", NOW + 1800),
        ("+2d", NOW + 172800),
        ("'2027-01-15T10:00:00Z'", 1_800_007_200),
        ("2027-01-15T10:00:00Z", 1_800_007_200),  # unquoted: YAML decodes the timestamp itself
        ("2027-01-15T12:00:00+02:00", 1_800_007_200),
    ],
)
def test_deadlines(written: str, seconds: float) -> None:
    assert one(BASE + f"deadline: {written}\n").deadline.ToSeconds() == seconds


def test_kind_accepts_upper_case_and_wire_names() -> None:
    assert one(BASE.replace("kind: batch", "kind: TRAINING")).kind == pb.JOB_KIND_TRAINING
    assert one(BASE.replace("kind: batch", "kind: JOB_KIND_INFERENCE")).kind == pb.JOB_KIND_INFERENCE


def test_tags_named_fields_and_extra() -> None:
    m = one(BASE + "tags: {project: p, cost_center: 4411, team: t, workload_type: w, stage: s, owner: me}\n")
    assert (m.tags.project, m.tags.cost_center, m.tags.team, m.tags.workload_type, m.tags.stage) == (
        "p",
        "4411",
        "t",
        "w",
        "s",
    )
    assert dict(m.tags.extra) == {"owner": "me"}
    wire = one(BASE + "tags: {project: p, extra: {owner: me}}\n")
    assert dict(wire.tags.extra) == {"owner": "me"}


def test_datasets_by_id_inline_and_wire_forms() -> None:
    m = one(
        BASE
        + "datasets:\n"
        + "  - imagenet-21k\n"
        + "  - {id: shards, size_gb: 300, replica_sites: [onprem-fra], classification: internal}\n"
        + "  - {id: code-corpus-v3}\n"
        + "  - {catalog_id: claims-2025}\n"
        + "  - {inline: {id: more, size_gb: 1.5, replica_sites: onprem-sjc}}\n"
    )
    kinds = [d.WhichOneof("source") for d in m.datasets]
    assert kinds == ["catalog_id", "inline", "catalog_id", "catalog_id", "inline"]
    assert [m.datasets[i].catalog_id for i in (0, 2, 3)] == ["imagenet-21k", "code-corpus-v3", "claims-2025"]
    shards = m.datasets[1].inline
    assert (shards.id, shards.size_gb, list(shards.replica_sites), shards.classification) == (
        "shards",
        300.0,
        ["onprem-fra"],
        "internal",
    )
    assert list(m.datasets[4].inline.replica_sites) == ["onprem-sjc"]


def test_entrypoint_as_a_list_is_shell_quoted() -> None:
    m = one(BASE.replace("entrypoint: 'true'", "entrypoint: [python3, -c, \"print('a b')\"]"))
    assert shlex.split(m.entrypoint) == ["python3", "-c", "print('a b')"]


def test_inference_block_and_lists() -> None:
    m = one(
        BASE.replace("kind: batch", "kind: inference")
        + "gpu_models: L40S\n"
        + "allowed_sites: [onprem-fra, aws-eu-central-1]\n"
        + "inference: {latency_slo_ms: 25, user_regions: [eu-west], replicas: 3, spread: true}\n"
    )
    assert list(m.gpu_models) == ["L40S"]
    assert list(m.allowed_sites) == ["onprem-fra", "aws-eu-central-1"]
    assert (m.inference.latency_slo_ms, list(m.inference.user_regions)) == (25.0, ["eu-west"])
    assert (m.inference.replicas, m.inference.spread, m.inference.dedicated) == (3, True, False)


def test_max_cost_is_present_only_when_written() -> None:
    assert not one(BASE).HasField("max_cost_usd")
    assert one(BASE + "max_cost_usd: 100\n").max_cost_usd == 100.0


def test_a_list_of_specs_and_a_jobs_mapping() -> None:
    listed = parse_job_text("- {name: a, gpus: 1}\n- {name: b, gpus: 2}\n", "f.yaml", now=NOW)
    assert [(s.name, s.gpus) for s in listed] == [("a", 1), ("b", 2)]
    wrapped = parse_job_text("jobs:\n  - {name: a}\n  - {name: b}\n  - {name: c}\n", "f.yaml", now=NOW)
    assert [s.name for s in wrapped] == ["a", "b", "c"]


def test_standard_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(BASE))
    (m,) = load_job_file("-", now=NOW)
    assert m.name == "j"


# ---------------------------------------------------------------------- errors name file and field


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("gpus: eight", "job.yaml: gpus: expected an integer, got 'eight'"),
        ("gpus: 8.5", "job.yaml: gpus: expected an integer, got 8.5"),
        ("gpus: true", "job.yaml: gpus: expected an integer, got true (a boolean)"),
        ("gpus:", "job.yaml: gpus: expected an integer, got nothing (null)"),
        ("gpus: 3000000000", "job.yaml: gpus: 3000000000 is out of range"),
        ("cpus: lots", "job.yaml: cpus: expected a number, got 'lots'"),
        ("single_node: 'yes'", "job.yaml: single_node: expected true or false, got 'yes'"),
        ("name: [a]", "job.yaml: name: expected a string, got a list"),
        ("gpu_models: 3", "job.yaml: gpu_models: expected a list of strings, got 3"),
        ("gpu_models: [H100-80GB, 3]", "job.yaml: gpu_models[1]: expected a string, got 3"),
        ("kind: train", "job.yaml: kind: expected training, batch or inference, got 'train'"),
        ("tags: [a, b]", "job.yaml: tags: expected a mapping of tag names to values, got a list"),
        ("tags: {stage: yes}", "job.yaml: tags.stage: expected a string, got true (a boolean) (quote it"),
        ("env: {DEBUG: true}", "job.yaml: env.DEBUG: expected a string, got true"),
        ("datasets: imagenet-21k", "job.yaml: datasets: expected a list of dataset ids or mappings"),
        ("datasets: [{id: x, size_gb: big}]", "job.yaml: datasets[0].size_gb: expected a number, got 'big'"),
        ("datasets: [{id: x, sizegb: 3}]", "job.yaml: datasets[0].sizegb: unknown field (did you mean size_gb?)"),
        ("datasets: [3]", "job.yaml: datasets[0]: expected a dataset id or a mapping"),
        ("inference: {replicas: two}", "job.yaml: inference.replicas: expected an integer, got 'two'"),
        ("inference: {latency: 5}", "job.yaml: inference.latency: unknown field (did you mean latency_slo_ms?)"),
        ("deadline: tomorrow", "job.yaml: deadline: expected an RFC3339 time"),
        ("deadline: 2027-01-15", "job.yaml: deadline: a date alone is ambiguous"),
        ("deadline: '2027-01-15T10:00:00'", "job.yaml: deadline: 2027-01-15T10:00:00 has no time zone"),
        ("deadline: +soon", "job.yaml: deadline: expected a duration"),
        ("max_retries: '2'", "job.yaml: max_retries: expected an integer, got '2'"),
        ("gpu: 8", "job.yaml: gpu: unknown field (did you mean gpus?)"),
        ("colour: blue", "job.yaml: colour: unknown field (known: "),
        ("runtime_s: 60", "job.yaml: runtime: give runtime or runtime_s, not both"),
    ],
)
def test_wrong_fields_are_named(extra: str, expected: str) -> None:
    assert error(with_line(extra)).startswith(expected)


def test_runtime_that_is_not_a_duration() -> None:
    assert error(BASE.replace("runtime: 1h", "runtime: 6 hours")).startswith(
        "job.yaml: runtime: expected a duration such as 6h"
    )


def test_field_paths_inside_lists_and_jobs() -> None:
    assert error("- {name: a, gpus: 1}\n- {name: b, gpus: x}\n").startswith("job.yaml: [1].gpus: expected an integer")
    assert error("jobs:\n  - {name: a}\n  - {name: b, gpu: 1}\n").startswith(
        "job.yaml: jobs[1].gpu: unknown field (did you mean gpus?)"
    )
    assert error("jobs: [{name: a}]\nname: b\n") == "job.yaml: name: a file with `jobs:` holds nothing else"
    assert error("jobs: {name: a}\n").startswith("job.yaml: jobs: expected a list of job specs, got a mapping")
    assert error("- 3\n").startswith("job.yaml: [0]: expected a job spec")


def test_whole_file_problems() -> None:
    assert error("") == "job.yaml: no job specs in the file"
    assert error("jobs: []\n") == "job.yaml: jobs: no job specs in the file"
    assert error("just a string\n").startswith("job.yaml: expected a job spec (a mapping), got 'just a string'")
    assert error("name: a\ngpus: 1\nname: b\n") == "job.yaml: not valid YAML: line 3, column 1: duplicate key 'name'"
    assert error("name: a\ngpus: [1\n").startswith("job.yaml: not valid YAML: line ")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(JobFileError) as info:
        load_job_file(str(tmp_path / "missing.yaml"))
    assert str(info.value) == f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory"

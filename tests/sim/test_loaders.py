"""Trace loaders: real excerpts, their quirks, and malformed rows named by file and line."""

from __future__ import annotations

import datetime as dt

import pytest

from simulations.traces import (
    TraceError,
    load_generic_jobs,
    load_openb_nodes,
    load_openb_pods,
    load_philly_jobs,
    load_philly_vc_nodes,
    replay_jobs,
)
from tests.sim.conftest import DATA, SCENARIOS

PHILLY_HEADER = "timestamp,duration,num_gpus,gpu_time,cluster\n"


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_philly_excerpt_quirks_blank_line_and_duplicate():
    jobs, report = load_philly_jobs(DATA / "philly_jobs_excerpt.csv")
    assert (report.rows, report.loaded, report.duplicates_dropped, report.blank_lines) == (13, 12, 1, 1)
    assert [j.submit_at for j in jobs] == sorted(j.submit_at for j in jobs)
    first = next(j for j in jobs if j.id == "philly-L2")  # the first data row is line 2
    assert first.duration_s == 66.0 and first.gpus == 1 and first.group == "11cb48"
    assert first.submit_at == dt.datetime(2017, 10, 9, 7, 1, 55, tzinfo=dt.UTC).timestamp()
    kept, report = load_philly_jobs(DATA / "philly_jobs_excerpt.csv", duplicates="keep")
    assert len(kept) == 13 and report.duplicates_dropped == 0


def test_philly_local_time_zone_and_autumn_repeat(tmp_path):
    path = write(
        tmp_path, "p.csv", PHILLY_HEADER + "2017-11-05 01:30:00,10.0,1,10.0,vc\n2017-07-01 12:00:00,10.0,1,10.0,vc\n"
    )
    jobs, _ = load_philly_jobs(path, timezone="America/Los_Angeles")
    summer, autumn = jobs
    assert summer.submit_at == dt.datetime(2017, 7, 1, 19, 0, tzinfo=dt.UTC).timestamp()  # PDT = UTC-7
    assert autumn.submit_at == dt.datetime(2017, 11, 5, 8, 30, tzinfo=dt.UTC).timestamp()  # first 01:30 (PDT)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        load_philly_jobs(path, timezone="Mars/Olympus")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2017-10-09 7:01:55,66.0,1,66.0,vc", "timestamp: '2017-10-09 7:01:55' is not 'YYYY-MM-DD HH:MM:SS'"),
        ("2017-02-30 07:01:55,66.0,1,66.0,vc", "is not a valid date"),
        ("2017-10-09 07:01:55,-3,1,-3,vc", "duration: -3 must be > 0"),
        ("2017-10-09 07:01:55,abc,1,66.0,vc", "duration: 'abc' is not a number"),
        ("2017-10-09 07:01:55,66.0,0,0,vc", "num_gpus: '0' is below 1"),
        ("2017-10-09 07:01:55,66.0,2,66.0,vc", "gpu_time: 66 is not num_gpus x duration (132)"),
        ("2017-10-09 07:01:55,66.0,1,66.0", "expected 5 fields, found 4"),
        ("2017-10-09 07:01:55,66.0,1,66.0,", "cluster: missing value"),
    ],
)
def test_philly_malformed_row_names_file_and_line(tmp_path, row, message):
    good = "2017-10-09 07:01:55,66.0,1,66.0,vc\n"
    path = write(tmp_path, "bad.csv", PHILLY_HEADER + good + row + "\n" + good)
    with pytest.raises(TraceError) as exc:
        load_philly_jobs(path)
    assert exc.value.line == 3 and exc.value.source == str(path)
    assert str(exc.value).startswith(f"{path}:3: ") and message in str(exc.value)
    jobs, report = load_philly_jobs(path, on_error="skip", duplicates="keep")
    assert len(jobs) == 2 and report.skipped == 1 and report.problems[0].startswith(f"{path}:3: ")


def test_missing_column_is_named_at_line_1(tmp_path):
    path = write(tmp_path, "p.csv", "timestamp,duration,num_gpus,cluster\n")
    with pytest.raises(TraceError, match=r"p\.csv:1: missing column 'gpu_time'"):
        load_philly_jobs(path)
    with pytest.raises(TraceError, match="cannot read"):
        load_philly_jobs(tmp_path / "nope.csv")


def test_philly_vc_nodes():
    nodes = load_philly_vc_nodes(DATA / "philly_vc_nodes_excerpt.csv", gpus_per_node=8, gpu_model="P100")
    assert len(nodes) == 64 + 32 and {n.group for n in nodes} == {"6214e9", "7f04ca"}
    assert all(n.gpus == 8 and n.gpu_model == "P100" for n in nodes)


def test_openb_excerpts():
    nodes = load_openb_nodes(DATA / "openb_nodes_excerpt.csv")
    assert [(n.gpu_model, n.gpus, n.cpu_milli) for n in nodes][:3] == [
        ("P100", 2, 64000),
        ("P100", 2, 64000),
        ("G2", 8, 96000),
    ]
    pods, report = load_openb_pods(DATA / "openb_pods_excerpt.csv")
    assert len(pods) == 11 and report.skipped == 0
    shared = next(p for p in pods if p.name == "openb-pod-0001")
    assert (shared.num_gpu, shared.gpu_milli, shared.cpu_milli) == (1, 460, 6000)
    jobs = replay_jobs(pods, report, epoch=1000.0)
    assert len(jobs) == 7  # 3 CPU-only pods and 1 pod that never ran are left out
    assert any("CPU-only" in n for n in report.notes) and any("never ran" in n for n in report.notes)
    j = next(j for j in jobs if j.id == "openb-openb-pod-0006")
    assert j.submit_at == 1000.0 + 3019330 and j.duration_s == 11815163 - 3019331 and j.single_node


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("p,1000,1024,0,500,,BE,Running,0,10,0", "gpu_milli: 500 for a pod with no GPU"),
        ("p,1000,1024,2,500,,BE,Running,0,10,0", "only a single GPU is shared"),
        ("p,1000,1024,1,1000,H100,BE,Running,0,10,0", "gpu_spec: unknown GPU model 'H100'"),
        ("p,1000,1024,1,1000,,BE,Running,10,20,5", "scheduled_time: 5 is before creation_time 10"),
    ],
)
def test_openb_malformed_pod(tmp_path, row, message):
    header = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
    header += "creation_time,deletion_time,scheduled_time\n"
    path = write(tmp_path, "pods.csv", header + row + "\n")
    with pytest.raises(TraceError, match=f"pods.csv:2: .*{message}"):
        load_openb_pods(path)
    pods, report = load_openb_pods(path, on_error="skip")
    assert pods == [] and report.skipped == 1


def test_generic_example_and_its_columns():
    jobs, report = load_generic_jobs(SCENARIOS / "data" / "example_jobs.csv")
    assert len(jobs) == 60 and report.skipped == 0
    j = jobs[0]
    assert j.id == "job-000" and j.gpus == 16 and j.kind == "batch"
    assert j.tags == {"project": "vision", "cost_center": "cc-vision"} and j.group == "vision"
    assert any(x.deadline_at is not None for x in jobs) and any(x.gpu_milli < 1000 for x in jobs)


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("job_id,submit_time,duration_s,gpus,colour", "a,0,10,1,red", "unknown column 'colour'"),
        ("job_id,submit_time,duration_s,gpus", "a,yesterday,10,1", "submit_time: 'yesterday' is neither"),
        (
            "job_id,submit_time,duration_s,gpus,gpu_milli",
            "a,0,10,2,500",
            "gpu_milli: a shared GPU share needs gpus = 1",
        ),
        ("job_id,submit_time,duration_s,gpus,kind", "a,0,10,1,inference", "kind: 'inference' is not one of"),
        ("job_id,submit_time,duration_s,gpus,deadline,deadline_s", "a,0,10,1,100,50", "give deadline or deadline_s"),
        ("job_id,submit_time,duration_s,gpus,single_node", "a,0,10,1,maybe", "single_node: 'maybe'"),
    ],
)
def test_generic_malformed(tmp_path, header, row, message):
    path = write(tmp_path, "jobs.csv", f"{header}\n{row}\n")
    with pytest.raises(TraceError, match=f"jobs.csv:2: .*{message}"):
        load_generic_jobs(path)


def test_generic_duplicate_ids_and_iso_times(tmp_path):
    path = write(
        tmp_path, "jobs.csv", "job_id,submit_time,duration_s,gpus,tag_team\na,2026-01-01T00:00:00Z,10,1,x\na,5,10,1,y\n"
    )
    with pytest.raises(TraceError, match=r"jobs.csv:3: job_id: 'a' appears twice"):
        load_generic_jobs(path)
    jobs, report = load_generic_jobs(path, on_error="skip")
    assert jobs[0].submit_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() and jobs[0].tags == {"team": "x"}
    assert report.skipped == 1

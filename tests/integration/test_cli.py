"""The `gravity` command line against a real in-process gRPC server (sim executor, port 0)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from placers.catalog import load_catalog
from scheduler import cli
from scheduler.api.server import Server
from scheduler.app import build_app
from scheduler.settings import ExecutorSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "examples" / "jobs"
EU_SITES = {s.name for s in load_catalog().sites if s.jurisdiction == "EU"}
ID = re.compile(r"\bj-[0-9a-f]+\b")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Gravity = Callable[..., Result]


@pytest.fixture
def server() -> Iterator[str]:
    app = build_app(Settings(executor=ExecutorSettings(kind="sim")))
    app.service.start()
    srv = Server(app.service, "127.0.0.1:0")
    srv.start()
    try:
        yield f"127.0.0.1:{srv.port}"
    finally:
        srv.stop(0)
        app.close()


@pytest.fixture
def gravity(server: str, capsys: pytest.CaptureFixture[str]) -> Gravity:
    """Run `gravity --server <test server> ARGS...` in-process; exit code and captured output."""

    def run(*argv: str) -> Result:
        capsys.readouterr()
        code = cli.main(["--server", server, *argv])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def wait_for(check: Callable[[], Any], timeout_s: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout_s} s: {check}")
        time.sleep(0.05)


def job(gravity: Gravity, job_id: str) -> dict[str, Any]:
    r = gravity("get", job_id, "--json")
    assert r.code == 0, r.err
    out: dict[str, Any] = r.json()
    return out


def submit(gravity: Gravity, *files: Path | str) -> list[str]:
    r = gravity("submit", "--json", *map(str, files))
    assert r.code == 0, r.err
    return [x["job"]["id"] for x in r.json()["results"]]


def short_job(tmp_path: Path, name: str = "quick", runtime: str = "1s") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nkind: batch\ngpus: 1\nruntime: {runtime}\nentrypoint: echo hi\n")
    return path


# ---------------------------------------------------------------------- submit, get


def test_submit_a_sample_then_get_shows_it(gravity: Gravity) -> None:
    r = gravity("submit", str(JOBS / "eu-training.yaml"))
    assert r.code == 0, r.err
    assert "eu-support-finetune" in r.out and "pending" in r.out and "new" in r.out
    (job_id,) = set(ID.findall(r.out))

    placed = wait_for(lambda: (j := job(gravity, job_id))["state"] != "JOB_STATE_PENDING" and j)
    assert placed["state"] in ("JOB_STATE_PLACED", "JOB_STATE_RUNNING")
    assert placed["placement"]["site"] in EU_SITES  # eu-gdpr data stays in the EU

    r = gravity("get", job_id)
    assert r.code == 0, r.err
    assert r.out.startswith(f"{job_id}  eu-support-finetune\n")
    assert "training, 8 GPUs on one node" in r.out
    assert f"placement    {placed['placement']['site']}/{placed['placement']['pool']}" in r.out
    assert "owner=ana" in r.out and "cost_center=cc-4411" in r.out


def test_submit_json_carries_the_parsed_spec(gravity: Gravity) -> None:
    r = gravity("submit", "--json", str(JOBS / "eu-training.yaml"))
    assert r.code == 0, r.err
    (result,) = r.json()["results"]
    assert result["created"] is True
    spec = result["job"]["spec"]
    assert (spec["name"], spec["kind"], spec["gpus"], spec["single_node"]) == (
        "eu-support-finetune",
        "JOB_KIND_TRAINING",
        8,
        True,
    )
    assert spec["tags"]["cost_center"] == "cc-4411" and spec["tags"]["extra"] == {"owner": "ana"}
    assert spec["datasets"] == [{"catalog_id": "eu-customer-support-2026"}]


def test_several_files_go_in_one_call(gravity: Gravity) -> None:
    ids = submit(gravity, JOBS / "eu-training.yaml", JOBS / "batch-deadline.yaml", JOBS / "inference-latency.yaml")
    assert len(set(ids)) == 3
    names = {job(gravity, i)["spec"]["name"] for i in ids}
    assert names == {"eu-support-finetune", "imagenet-embeddings-nightly", "support-chat-eu"}


def test_get_unknown_job_is_not_found(gravity: Gravity) -> None:
    r = gravity("get", "j-nope")
    assert (r.code, r.out) == (1, "")
    assert r.err == "error: NOT_FOUND: no job 'j-nope'\n"


# ---------------------------------------------------------------------- list


def test_list_with_filters(gravity: Gravity) -> None:
    train, batch, us_only = submit(
        gravity, JOBS / "eu-training.yaml", JOBS / "batch-deadline.yaml", JOBS / "us-only-eu-data.yaml"
    )
    wait_for(lambda: job(gravity, us_only)["state"] == "JOB_STATE_REJECTED")
    batch_site = wait_for(lambda: job(gravity, batch).get("placement", {}).get("site"))
    wait_for(lambda: job(gravity, train).get("placement"))

    def listed(*args: str) -> list[str]:
        r = gravity("list", *args)
        assert r.code == 0, r.err
        return ID.findall(r.out)

    assert listed() == [us_only, batch, train]  # newest first
    assert listed("--state", "rejected") == [us_only]
    assert set(listed("--state", "placed,running", "--state", "succeeded")) == {train, batch}
    assert listed("--tag", "cost_center=cc-4411") == [train]
    assert listed("--tag", "team=vision", "--tag", "stage=prod") == [batch]
    assert batch in listed("--site", batch_site)
    assert us_only not in listed("--site", batch_site)

    r = gravity("list", "--state", "rejected")
    assert "no site can ever run this job" in r.out


def test_list_limit_and_all_follow_page_tokens(gravity: Gravity, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = submit(gravity, JOBS / "eu-training.yaml", JOBS / "batch-deadline.yaml", JOBS / "us-only-eu-data.yaml")
    r = gravity("list", "--limit", "2")
    assert ID.findall(r.out) == ids[::-1][:2]
    assert "more match" in r.err

    monkeypatch.setattr(cli, "PAGE_SIZE", 2)  # three jobs: two pages
    r = gravity("list", "--all", "--json")
    assert r.code == 0, r.err
    assert [j["id"] for j in r.json()["jobs"]] == ids[::-1]
    assert r.json()["next_page_token"] == ""


def test_list_bad_arguments(gravity: Gravity) -> None:
    assert gravity("list", "--site", "mars").err == "error: INVALID_ARGUMENT: site: unknown site 'mars'\n"
    with pytest.raises(SystemExit) as info:
        gravity("list", "--state", "bogus")
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        gravity("list", "--tag", "novalue")


# ---------------------------------------------------------------------- json


def test_json_outputs_parse(gravity: Gravity) -> None:
    (job_id,) = submit(gravity, JOBS / "batch-deadline.yaml")
    got = gravity("get", job_id, "--json").json()
    assert got["id"] == job_id and got["spec"]["deadline"].endswith("Z")
    listed = gravity("list", "--json").json()
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    sites = gravity("sites", "--json").json()
    assert {s["name"] for s in sites["sites"]} == {s.name for s in load_catalog().sites}
    pools = [p for s in sites["sites"] for p in s["pools"]]
    assert all({"free_gpus", "total_gpus", "usd_per_gpu_hour"} <= p.keys() for p in pools)
    explained = gravity("explain", job_id, "--json").json()
    assert explained["job_id"] == job_id and explained["candidates"]


# ---------------------------------------------------------------------- explain, rejection


def test_explain_us_only_eu_data_shows_the_residency_reason(gravity: Gravity) -> None:
    r = gravity("explain", "--file", str(JOBS / "us-only-eu-data.yaml"))
    assert r.code == 0, r.err
    first = r.out.splitlines()[0]
    assert first.startswith("dry run (us-analytics-on-eu-data): no site can take it now; 0 of ")
    assert "dataset eu-customer-support-2026 is eu-gdpr (must stay in EU)" in r.out
    assert "jurisdiction EU is not one of US" in r.out
    assert "\nsummary: " in r.out

    reply = gravity("explain", "--file", str(JOBS / "us-only-eu-data.yaml"), "--json").json()
    assert reply["chosen_site"] == ""
    assert not any(c["feasible"] for c in reply["candidates"])
    us = [c for c in reply["candidates"] if c["site"] not in EU_SITES]
    assert us and all(any("eu-gdpr" in why for why in c["reasons"]) for c in us)
    assert gravity("list", "--json").json()["jobs"] == []  # a dry run submits nothing


def test_us_only_eu_data_is_rejected(gravity: Gravity) -> None:
    (job_id,) = submit(gravity, JOBS / "us-only-eu-data.yaml")
    rejected = wait_for(lambda: (j := job(gravity, job_id))["state"] == "JOB_STATE_REJECTED" and j)
    assert "eu-gdpr" in rejected["reason"]
    r = gravity("explain", job_id)
    assert r.out.startswith(f"job {job_id} (us-analytics-on-eu-data): no site can take it now")


def test_explain_a_submitted_job_marks_the_chosen_candidate(gravity: Gravity) -> None:
    (job_id,) = submit(gravity, JOBS / "eu-training.yaml")
    site = wait_for(lambda: job(gravity, job_id).get("placement", {}).get("site"))
    r = gravity("explain", job_id)
    assert r.code == 0, r.err
    assert r.out.startswith(f"job {job_id} (eu-support-finetune): chosen {site}/")
    lines = r.out.splitlines()
    header = next(i for i, line in enumerate(lines) if "SITE" in line and "REASONS" in line)
    assert lines[header + 1].startswith(f"*  {site} ")
    assert "spot candidates not shown" in r.out  # the job does not take spot
    every = gravity("explain", job_id, "--all")
    assert len(every.out.splitlines()) > len(lines) and "spot candidates not shown" not in every.out


def test_explain_needs_an_id_or_a_file(gravity: Gravity) -> None:
    with pytest.raises(SystemExit) as info:
        gravity("explain")
    assert info.value.code == 2


# ---------------------------------------------------------------------- errors


def test_bad_gpus_is_refused_by_the_server_naming_spec_gpus(gravity: Gravity) -> None:
    r = gravity("submit", str(JOBS / "bad-gpus.yaml"))
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("error: INVALID_ARGUMENT: spec.gpus: must be at least 1")
    assert "bad-gpus.yaml" in r.err
    assert gravity("list", "--json").json()["jobs"] == []


def test_a_bad_spec_in_a_batch_submits_nothing(gravity: Gravity) -> None:
    r = gravity("submit", str(JOBS / "eu-training.yaml"), str(JOBS / "bad-gpus.yaml"))
    assert r.code == 1
    assert r.err.startswith("error: INVALID_ARGUMENT: specs[1].gpus: must be at least 1")
    assert r.err.rstrip().endswith(f"[{JOBS / 'bad-gpus.yaml'}]")
    assert gravity("list", "--json").json()["jobs"] == []


def test_malformed_job_file_exits_2_naming_the_field(gravity: Gravity, tmp_path: Path) -> None:
    bad = tmp_path / "job.yaml"
    bad.write_text("name: x\nkind: batch\ngpus: eight\nentrypoint: 'true'\n")
    r = gravity("submit", str(JOBS / "eu-training.yaml"), str(bad))
    assert r.code == 2 and r.out == ""
    assert r.err == f"error: {bad}: gpus: expected an integer, got 'eight'\n"

    unknown = tmp_path / "typo.yaml"
    unknown.write_text("name: x\nkind: batch\ngpu: 8\n")
    r = gravity("explain", "--file", str(unknown))
    assert (r.code, r.err) == (2, f"error: {unknown}: gpu: unknown field (did you mean gpus?)\n")
    assert gravity("list", "--json").json()["jobs"] == []  # nothing submitted


def test_unreachable_server_fails_fast_naming_the_address(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    began = time.monotonic()
    code = cli.main(["sites", "--server", f"127.0.0.1:{port}"])
    took = time.monotonic() - began
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot reach the Gravity server at 127.0.0.1:{port}" in err
    assert took < cli.CONNECT_TIMEOUT_S + 2


def test_server_default_comes_from_the_environment(
    server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRAVITY_SERVER", server)
    assert cli.main(["sites"]) == 0
    assert "onprem-fra" in capsys.readouterr().out


# ---------------------------------------------------------------------- cancel, watch, sites


def test_cancel_records_the_user_and_reason(gravity: Gravity, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "alice")
    (job_id,) = submit(gravity, JOBS / "inference-latency.yaml")
    wait_for(lambda: job(gravity, job_id)["state"] == "JOB_STATE_RUNNING")
    r = gravity("cancel", job_id, "--reason", "demo over")
    assert (r.code, r.out) == (0, f"{job_id} cancelled by alice: demo over\n")
    got = job(gravity, job_id)
    assert (got["state"], got["cancelled_by"], got["reason"]) == ("JOB_STATE_CANCELLED", "alice", "demo over")

    r = gravity("watch", job_id)  # already over: says so, and the exit status tells it did not succeed
    assert r.code == cli.EXIT_JOB_UNSUCCESSFUL
    assert "already ended: cancelled" in r.out


def test_watch_a_job_until_it_ends(gravity: Gravity, tmp_path: Path) -> None:
    (job_id,) = submit(gravity, short_job(tmp_path))
    r = gravity("watch", job_id)
    assert r.code == 0, r.err
    kinds = [line.split()[2] for line in r.out.splitlines()]
    assert kinds[0] == "submitted" and kinds[-1] == "succeeded"
    assert "running" in kinds
    assert all(job_id in line for line in r.out.splitlines())

    r = gravity("watch", job_id, "--json")
    (event,) = [json.loads(line) for line in r.out.splitlines()]
    assert (event["kind"], event["job"]["state"]) == ("succeeded", "JOB_STATE_SUCCEEDED")


def test_watch_all_streams_until_ctrl_c(server: str, tmp_path: Path, gravity: Gravity) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "watch", "--server", server],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = _lines(proc.stdout)
    try:
        first = None
        for _ in range(40):  # the stream starts with events after it connects: submit until one shows
            submit(gravity, short_job(tmp_path, runtime="1h"))
            try:
                first = lines.get(timeout=0.5)
                break
            except queue.Empty:
                continue
        assert first is not None and re.match(r"\d\d:\d\d:\d\d  #\d+  \w+ +j-[0-9a-f]+  quick  ", first), first
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_sites_table(gravity: Gravity) -> None:
    r = gravity("sites")
    assert r.code == 0, r.err
    header, *rows, blank, summary = r.out.splitlines()
    assert header.split()[:4] == ["SITE", "KIND", "JUR", "REGION"]
    catalog = load_catalog()
    assert [row.split()[0] for row in rows] == [p.site for p in catalog.pools]
    fra_l40s = next(row.split() for row in rows if " l40s-inference " in row)
    assert fra_l40s[:10] == [
        "onprem-fra",
        "onprem",
        "EU",
        "eu-central",
        "up",
        "l40s-inference",
        "L40S",
        "24",
        "24",
        "0.55",
    ]
    assert fra_l40s[10:] == ["-", "dedicated"]  # no spot price on-prem; batch work cannot take it
    total = sum(p.max_gpus for p in catalog.pools)
    assert (blank, summary) == ("", f"{len(catalog.sites)} sites, {total} of {total} GPUs free")


# ---------------------------------------------------------------------- serve


def test_serve_listens_answers_and_stops_on_sigterm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gravity.yaml"
    config.write_text("listen: 127.0.0.1:1\ncycle: {tick_s: 0.02}\nexecutor: {kind: ray}\n")
    serve = [sys.executable, "-m", "scheduler.cli", "serve", "--config", str(config)]
    proc = subprocess.Popen(
        [*serve, "--listen", "127.0.0.1:0", "--executor", "sim"],  # flags override the file
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("GRAVITY_")},
    )
    lines = _lines(proc.stderr)
    try:
        listening = None
        deadline = time.monotonic() + 30
        while listening is None and time.monotonic() < deadline:
            try:
                listening = re.search(r"listening on (127\.0\.0\.1:\d+) \(.*executor sim", lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "gravity serve exited early"
        assert listening is not None, "no 'listening on' line"
        assert cli.main(["sites", "--server", listening.group(1)]) == 0
        assert "onprem-sjc" in capsys.readouterr().out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--catalog", "/nonexistent/catalog.yaml"], "/nonexistent/catalog.yaml"),
        (["--placer", "no-such-placer"], "no-such-placer"),
        (["--store-url", "ftp://x"], "store_url 'ftp://x'"),
        (["--log-level", "LOUD"], "log_level"),
    ],
)
def test_serve_configuration_errors_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAVITY_LISTEN", raising=False)
    code = cli.main(["serve", "--executor", "sim", "--listen", "127.0.0.1:0", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1, err


def test_serve_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gravity.yaml"
    config.write_text("listen: 127.0.0.1:0\nplacr: greedy\n")
    assert cli.main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}: placr: ") and err.count("\n") == 1


def _lines(stream: Any) -> queue.Queue[str]:
    """Lines of a pipe, read on a thread, so a test can wait with a timeout."""
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            out.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return out

"""Seeded placement instances for benchmarks/bench_placement.py.

* `big_catalog(n_sites)`: the default catalog grown to `n_sites` sites: its cloud regions cloned into
  new regions (same provider, jurisdiction and user region, prices perturbed by -15%..+20%, RTTs by
  a few ms; a clone keeps one of its template's H100/A100 pools), plus extra on-prem
  clusters in both jurisdictions. Built through the catalog schema,
  so it is validated like any user catalog.
* `scaled(catalog, demand_gpus)`: the same sites with cloud quotas scaled so the whole batch fits
  (about 2x the batch's GPUs in the cloud) while on-prem stays cheap and scarce (its real size,
  or at most ~15% of the batch): the placers compete on *where*, not on *whether*.
* `instance(catalog, n_jobs, kind, seed)`: a pending batch with correlated numbers:
  - datasets of 10 GB to 50 TB (log-uniform), each with a home site; ~25% EU-resident (eu-gdpr,
    homed in an EU site); popularity is Zipf-like, so many jobs share each dataset;
  - 1/2/4/8-GPU jobs (gangs on one node), runtimes log-normal around 3 h and longer for bigger jobs,
    some restricted to H100-class or A100 GPUs, 30% spot-tolerant;
  - 40% with a deadline of 1.5-5x their A100 runtime (some become infeasible: rejected by all);
  - priority tiers 0/1/2 at 75/20/5%; cost-center tags.
  kind "mixed": datasets homed half on-prem, half in clouds; 15% of jobs read no data.
  kind "gravity": data-heavy: 1-50 TB datasets, 70% homed in clouds (real egress), every job reads
  data: where the data sits dominates the bill.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from placers.capacity import CapacityState
from placers.catalog import Catalog, parse_catalog, read_yaml
from placers.domain import Dataset, JobKind, JobSpec

NOW = 1_800_000_000.0


def default_doc() -> dict[str, Any]:
    import importlib.resources

    ref = importlib.resources.files("placers") / "data" / "default_catalog.yaml"
    doc = read_yaml(ref, "default_catalog.yaml")
    assert isinstance(doc, dict)
    return doc


def big_catalog(n_sites: int = 64, seed: int = 7) -> Catalog:
    doc = default_doc()
    rng = np.random.default_rng(seed)
    base_sites = doc["sites"]
    clouds = [s for s in base_sites if s["kind"] == "cloud"]
    onprem = [s for s in base_sites if s["kind"] == "onprem"]
    sites = list(base_sites)
    # two more on-prem clusters (US east, EU west), smaller and a little dearer
    for template, name, region in ((onprem[0], "onprem-iad", "us-east"), (onprem[1], "onprem-ams", "eu-west")):
        s = copy.deepcopy(template)
        s["name"], s["region"] = name, region
        s["rtt_ms"] = {k: float(v) + float(rng.uniform(0, 20)) for k, v in s["rtt_ms"].items()}
        s["rtt_ms"][region] = 3.0
        for p in s["pools"]:
            p["nodes"] = max(2, int(p["nodes"] * 0.5))
            p["usd_per_gpu_hour"] = round(p["usd_per_gpu_hour"] * float(rng.uniform(1.0, 1.15)), 3)
        sites.append(s)
    k = 0
    while len(sites) < n_sites:
        t = clouds[k % len(clouds)]
        k += 1
        s = copy.deepcopy(t)
        s["name"] = f"{t['name']}-z{k}"
        factor = float(rng.uniform(0.85, 1.2))
        # a clone offers one data-center GPU shape of its template (H100 or A100 in turn; the L4/L40S
        # pools stay with the originals), so 64 sites stay near 150 options
        want = "H100-80GB" if k % 2 else "A100-80GB"
        s["pools"] = [p for p in s["pools"] if p["gpu_model"] == want][:1] or s["pools"][:1]
        for p in s["pools"]:
            p["usd_per_gpu_hour"] = round(p["usd_per_gpu_hour"] * factor * float(rng.uniform(0.97, 1.03)), 3)
            if p.get("spot_usd_per_gpu_hour"):
                p["spot_usd_per_gpu_hour"] = round(p["spot_usd_per_gpu_hour"] * float(rng.uniform(0.8, 1.3)), 3)
        s["storage_usd_per_gb_month"] = round(s["storage_usd_per_gb_month"] * float(rng.uniform(0.9, 1.15)), 4)
        s["rtt_ms"] = {r: round(float(v) + float(rng.uniform(0, 15)), 1) for r, v in s["rtt_ms"].items()}
        sites.append(s)
    doc["sites"] = sites
    doc["datasets"] = []
    return parse_catalog(doc, f"generated-{len(sites)}-sites")


def scaled(catalog: Catalog, demand_gpus: float, cloud_factor: float = 2.0, onprem_share: float = 0.15) -> Catalog:
    """Cloud quotas sized to the batch; on-prem pools shrunk to at most `onprem_share` of it."""
    from dataclasses import replace

    clouds = [s for s in catalog.sites if not s.onprem]
    cloud_total = sum(catalog.total_gpus(s.name) for s in clouds)
    onprem_total = sum(p.max_gpus for s in catalog.sites if s.onprem for p in s.pools)
    grow = max(1.0, cloud_factor * demand_gpus / max(cloud_total, 1))
    shrink = min(1.0, onprem_share * demand_gpus / max(onprem_total, 1))
    sites = []
    for s in catalog.sites:
        pools = []
        for p in s.pools:
            if p.elastic:
                g = int(p.max_gpus * grow)
                pools.append(replace(p, max_gpus=g, nodes=max(1, g // p.gpus_per_node)))
            else:
                n = max(1, int(p.nodes * shrink))
                pools.append(replace(p, nodes=n, max_gpus=n * p.gpus_per_node))
        quota = int(s.burst_quota_gpus * grow) if s.burst_quota_gpus is not None else None
        sites.append(replace(s, pools=tuple(pools), burst_quota_gpus=quota))
    return catalog.with_changes(sites=tuple(sites), source=f"{catalog.source} (scaled x{grow:.1f})")


@dataclass
class Instance:
    catalog: Catalog
    specs: list[JobSpec]
    datasets: list[tuple[Dataset, ...]]
    capacity: CapacityState
    now: float = NOW

    @property
    def job_ids(self) -> list[str]:
        return [f"j{i}" for i in range(len(self.specs))]


def instance(catalog: Catalog, n_jobs: int, kind: str = "mixed", seed: int = 0) -> Instance:
    if kind not in ("mixed", "gravity"):
        raise ValueError(f"kind: expected mixed or gravity, got {kind!r}")
    rng = np.random.default_rng(seed)
    gravity = kind == "gravity"
    eu_sites = [s.name for s in catalog.sites if s.jurisdiction == "EU"]
    us_sites = [s.name for s in catalog.sites if s.jurisdiction != "EU"]
    onprem = {s.name for s in catalog.sites if s.onprem}

    def home(eu: bool) -> str:
        pool = eu_sites if eu else us_sites
        want_onprem = rng.random() < (0.3 if gravity else 0.5)
        cands = [s for s in pool if (s in onprem) == want_onprem] or pool
        return str(cands[rng.integers(len(cands))])

    n_ds = max(10, n_jobs // 40)
    lo, hi = (1_000.0, 50_000.0) if gravity else (10.0, 50_000.0)
    sizes = np.exp(rng.uniform(np.log(lo), np.log(hi), n_ds))
    datasets = []
    for i in range(n_ds):
        eu = rng.random() < 0.25
        replicas = [home(eu)]
        if rng.random() < 0.15:
            second = home(eu)
            if second != replicas[0]:
                replicas.append(second)
        datasets.append(Dataset(f"ds{i}", float(round(sizes[i], 1)), tuple(replicas), "eu-gdpr" if eu else "internal"))
    popularity = 1.0 / np.arange(1, n_ds + 1) ** 0.9
    popularity /= popularity.sum()

    gpus = rng.choice([1, 2, 4, 8], size=n_jobs, p=[0.45, 0.2, 0.15, 0.2])
    runtime = np.clip(rng.lognormal(np.log(3 * 3600), 0.9, n_jobs) * (1 + np.log2(gpus) / 3), 600, 48 * 3600)
    no_data = (rng.random(n_jobs) < 0.15) if not gravity else np.zeros(n_jobs, dtype=bool)
    two = rng.random(n_jobs) < 0.05
    first = rng.choice(n_ds, size=n_jobs, p=popularity)
    second = rng.choice(n_ds, size=n_jobs, p=popularity)
    model_draw = rng.random(n_jobs)
    has_deadline = rng.random(n_jobs) < 0.4
    slack = rng.uniform(1.5, 5.0, n_jobs)
    priority = rng.choice([0, 1, 2], size=n_jobs, p=[0.75, 0.2, 0.05])
    spot = rng.random(n_jobs) < 0.3
    cost_center = rng.integers(8, size=n_jobs)
    project = rng.integers(40, size=n_jobs)
    specs: list[JobSpec] = []
    job_data: list[tuple[Dataset, ...]] = []
    for j in range(n_jobs):
        ds: tuple[Dataset, ...] = ()
        if not no_data[j]:
            ds = (datasets[int(first[j])],)
            if two[j] and second[j] != first[j]:
                ds += (datasets[int(second[j])],)
        models: tuple[str, ...] = ()
        if model_draw[j] < 0.25:
            models = ("H100-80GB", "H200", "B200")
        elif model_draw[j] < 0.4:
            models = ("A100-80GB",)
        specs.append(
            JobSpec(
                name=f"job-{j}",
                kind=JobKind.TRAINING if gpus[j] >= 4 else JobKind.BATCH,
                gpus=int(gpus[j]),
                entrypoint="python train.py",
                single_node=True,
                runtime_s=float(round(runtime[j])),
                deadline_at=NOW + float(runtime[j] * slack[j]) if has_deadline[j] else None,
                priority=int(priority[j]),
                gpu_models=models,
                datasets=ds,
                spot_ok=bool(spot[j]),
                tags={"cost_center": f"cc-{int(cost_center[j])}", "project": f"p{int(project[j])}"},
            )
        )
        job_data.append(ds)
    demand = float(sum(s.total_gpus for s in specs))
    cat = scaled(catalog, demand)
    return Instance(cat, specs, job_data, CapacityState.empty(cat))

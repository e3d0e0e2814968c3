"""Sites for a replay: on-prem sites built from a trace's node list, joined with cloud sites.

The catalog of a scenario is assembled as a catalog *document* (the same shape as
placers/data/default_catalog.yaml) and validated by `placers.catalog.parse_catalog`, so a
scenario-built catalog obeys exactly the rules of a hand-written one:

  1. the base catalog's sites that the scenario keeps (by default its cloud regions), its GPU
     models, user regions, residency rules and the links among kept sites;
  2. GPU models the trace needs (e.g. Philly's P100, openb's T4 or G2), with speeds;
  3. on-prem sites from the trace's nodes: openb nodes grouped into one pool per node shape
     (GPU model, GPUs, CPU, memory); Philly nodes into one pool per virtual cluster, or one
     site per virtual cluster when jobs must stay in their own VC;
  4. extra sites and links written inline in the scenario;
  5. the what-if knobs (add GPUs, scale prices, change egress tariffs, add links, residency
     rules; `forbid` is applied to jobs, not sites, so data may still live there).
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.resources
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placers.catalog import DEFAULT_CATALOG, CatalogError, read_yaml
from simulations.scenario import AddGpus, Egress, Forbid, OnPremSection, ScalePrice, Scenario
from simulations.traces.base import TraceNode


@dataclass
class SiteBuild:
    """What assembling the catalog decided, for the workload builder and the report."""

    onprem_sites: list[str] = field(default_factory=list)
    group_site: dict[str, str] = field(default_factory=dict)  # trace group (VC) -> its own site
    forbidden_sites: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)


def base_document(scenario: Scenario) -> dict[str, Any]:
    base = scenario.spec.catalog.base
    try:
        if base == DEFAULT_CATALOG:
            ref = importlib.resources.files("placers") / "data" / "default_catalog.yaml"
            raw = read_yaml(ref, "default_catalog.yaml")
        else:
            path = scenario.path(base, "catalog.base")
            raw = read_yaml(Path(path), str(path))
    except CatalogError as exc:
        raise scenario.fail("catalog.base", str(exc)) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("sites"), list):
        raise scenario.fail("catalog.base", f"{base!r} is not a catalog document")
    return raw


def _kept(site: dict[str, Any], keep: str | list[str]) -> bool:
    if keep == "all":
        return True
    if keep == "none":
        return False
    if keep == "cloud":
        return bool(site.get("kind") == "cloud")
    return any(fnmatch.fnmatchcase(str(site.get("name", "")), pattern) for pattern in keep)


def _price(section: OnPremSection, model: str, scenario: Scenario, at: str) -> float:
    prices = section.usd_per_gpu_hour
    if isinstance(prices, float | int):
        return float(prices)
    if model in prices:
        return float(prices[model])
    if "default" in prices:
        return float(prices["default"])
    raise scenario.fail(f"{at}.usd_per_gpu_hour", f"no price for GPU model {model!r} (give it or a 'default')")


def _pool_name(model: str, gpus: int, cpu_milli: int, memory_mib: int, taken: set[str]) -> str:
    name = f"{model}-{gpus}x".lower()
    if name in taken:
        name = f"{model}-{gpus}x-{cpu_milli // 1000}c-{memory_mib // 1024}g".lower()
    k = 2
    base = name
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def onprem_sites(
    section: OnPremSection, at: str, nodes: Sequence[TraceNode], base: dict[str, Any], scenario: Scenario
) -> tuple[list[dict[str, Any]], dict[str, str], list[str]]:
    """Site documents for one on-prem section; also trace group -> site and notes."""
    notes: list[str] = []
    gpu_nodes = [n for n in nodes if n.gpus > 0]
    if len(gpu_nodes) < len(nodes):
        notes.append(f"{section.name}: {len(nodes) - len(gpu_nodes)} CPU-only nodes left out (Gravity places GPU work)")
    if not gpu_nodes:
        raise scenario.fail(at, "the trace's node list has no GPU node")
    rtt = section.rtt_ms
    if rtt is None:
        like = next((s for s in base["sites"] if s.get("region") == section.region), None)
        if like is None:
            raise scenario.fail(
                f"{at}.rtt_ms", f"no base site in region {section.region!r} to copy RTTs from; give rtt_ms"
            )
        rtt = dict(like["rtt_ms"])

    def site_doc(name: str, pools: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": name,
            "kind": "onprem",
            "provider": section.provider,
            "jurisdiction": section.jurisdiction,
            "region": section.region,
            "uplink_gbps": section.uplink_gbps,
            "storage_usd_per_gb_month": section.storage_usd_per_gb_month,
            "egress": {"internet_usd_per_gb": section.egress_usd_per_gb},
            "rtt_ms": dict(rtt),
            "pools": pools,
        }

    def pool_doc(name: str, model: str, gpus: int, count: int, cpu_milli: int, memory_mib: int) -> dict[str, Any]:
        cpus = cpu_milli / 1000.0 if cpu_milli else section.cpus_per_node
        mem = memory_mib / 1024.0 if memory_mib else section.memory_gb_per_node
        return {
            "name": name,
            "gpu_model": model,
            "gpus_per_node": gpus,
            "nodes": max(1, round(count * section.node_scale)),
            "cpus_per_node": cpus,
            "memory_gb_per_node": mem,
            "usd_per_gpu_hour": _price(section, model, scenario, at),
        }

    group_site: dict[str, str] = {}
    if section.site_per_group:
        by_group: dict[str, list[TraceNode]] = {}
        for n in gpu_nodes:
            by_group.setdefault(n.group or "default", []).append(n)
        sites = []
        for group in sorted(by_group):
            members = by_group[group]
            shapes = Counter((n.gpu_model, n.gpus, n.cpu_milli, n.memory_mib) for n in members)
            taken: set[str] = set()
            vc_pools = [
                pool_doc(_pool_name(m, g, c, mem, taken), m, g, count, c, mem)
                for (m, g, c, mem), count in sorted(shapes.items())
            ]
            name = f"{section.name}-{group}".lower()
            group_site[group] = name
            sites.append(site_doc(name, vc_pools))
        return sites, group_site, notes
    pools: list[dict[str, Any]] = []
    taken = set()
    if section.pools_by == "group":
        grouped = Counter((n.group or "default", n.gpu_model, n.gpus, n.cpu_milli, n.memory_mib) for n in gpu_nodes)
        for (group, m, g, c, mem), count in sorted(grouped.items()):
            name = group.lower() if group.lower() not in taken else _pool_name(m, g, c, mem, taken)
            taken.add(name)
            pools.append(pool_doc(name, m, g, count, c, mem))
    else:
        shapes = Counter((n.gpu_model, n.gpus, n.cpu_milli, n.memory_mib) for n in gpu_nodes)
        for (m, g, c, mem), count in sorted(shapes.items()):
            pools.append(pool_doc(_pool_name(m, g, c, mem, taken), m, g, count, c, mem))
    return [site_doc(section.name, pools)], group_site, notes


def assemble(scenario: Scenario, nodes: Sequence[TraceNode]) -> tuple[dict[str, Any], SiteBuild]:
    """The scenario's catalog document (datasets not yet added) and what was decided."""
    cat = scenario.spec.catalog
    base = base_document(scenario)
    doc = copy.deepcopy(base)
    build = SiteBuild()
    doc["sites"] = [s for s in base["sites"] if _kept(s, cat.base_sites)]
    kept = {s["name"] for s in doc["sites"]}
    doc["links"] = [link for link in base.get("links", []) or [] if link.get("from") in kept and link.get("to") in kept]
    datasets = []
    for d in base.get("datasets", []) or []:
        replicas = [r for r in d.get("replica_sites", []) if r in kept]
        if replicas:
            datasets.append({**d, "replica_sites": replicas})
    doc["datasets"] = datasets
    models = dict(doc.get("gpu_models", {}))
    for name, entry in cat.gpu_models.items():
        models[name] = entry.model_dump(exclude_defaults=False)
        if not models[name].get("source"):
            models[name].pop("source", None)
    doc["gpu_models"] = models

    for i, section in enumerate(cat.onprem):
        at = f"catalog.onprem[{i}]"
        if not nodes:
            raise scenario.fail(at, "the trace gives no node list (set trace.nodes)")
        sites, groups, notes = onprem_sites(section, at, nodes, base, scenario)
        for s in sites:
            for p in s["pools"]:
                if p["gpu_model"] not in models:
                    raise scenario.fail(
                        "catalog.gpu_models", f"GPU model {p['gpu_model']!r} of the trace's nodes is not defined here"
                    )
        doc["sites"].extend(sites)
        build.onprem_sites.extend(s["name"] for s in sites)
        build.group_site.update(groups)
        build.notes.extend(notes)
    for s in cat.sites:
        doc["sites"].append(copy.deepcopy(s))
        if s.get("kind") == "onprem":
            build.onprem_sites.append(str(s.get("name")))
    doc["links"].extend(copy.deepcopy(link) for link in cat.links)
    build.onprem_sites = sorted(
        set(build.onprem_sites) | {s["name"] for s in doc["sites"] if s.get("kind") == "onprem"}
    )
    names = [s["name"] for s in doc["sites"]]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise scenario.fail("catalog", f"site {dup!r} is defined twice")

    for i, w in enumerate(scenario.spec.what_if):
        at = f"what_if[{i}].{w.knob}"
        if w.add_gpus is not None:
            _add_gpus(doc, w.add_gpus, at, scenario, build)
        elif w.scale_price is not None:
            _scale_price(doc, w.scale_price, at, scenario)
        elif w.egress is not None:
            _egress(doc, w.egress, at, scenario)
        elif w.link is not None:
            doc["links"].append(copy.deepcopy(w.link))
        elif w.forbid is not None:
            build.forbidden_sites |= _forbidden(doc, w.forbid, at, scenario)
        elif w.residency is not None:
            residency = dict(doc.get("residency", {}) or {})
            residency[w.residency.classification] = list(w.residency.jurisdictions)
            doc["residency"] = residency
    # A residency rule may name a jurisdiction no kept site is in: data of that class then has
    # nowhere to be processed (its jobs are rejected with the reason), rather than a broken catalog.
    present = {s.get("jurisdiction") for s in doc["sites"]}
    doc["residency"] = {
        cls: [j for j in allowed if j in present] for cls, allowed in (doc.get("residency") or {}).items()
    }
    return doc, build


def _site(doc: dict[str, Any], name: str, at: str, scenario: Scenario) -> dict[str, Any]:
    for s in doc["sites"]:
        if s["name"] == name:
            return s  # type: ignore[no-any-return]
    raise scenario.fail(f"{at}.site", f"unknown site {name!r}")


def _add_gpus(doc: dict[str, Any], knob: AddGpus, at: str, scenario: Scenario, build: SiteBuild) -> None:
    site = _site(doc, knob.site, at, scenario)
    pools = site["pools"]
    if knob.pool is not None:
        pool = next((p for p in pools if p["name"] == knob.pool), None)
        if pool is None:
            raise scenario.fail(f"{at}.pool", f"site {knob.site!r} has no pool {knob.pool!r}")
        if pool["gpu_model"] != knob.gpu_model:
            raise scenario.fail(f"{at}.gpu_model", f"pool {knob.pool!r} has {pool['gpu_model']}, not {knob.gpu_model}")
    else:
        pool = next((p for p in pools if p["gpu_model"] == knob.gpu_model), None)
    onprem = site.get("kind") == "onprem"
    if pool is None:
        if knob.usd_per_gpu_hour is None:
            raise scenario.fail(
                f"{at}.usd_per_gpu_hour", f"site {knob.site!r} has no {knob.gpu_model} pool: price the new one"
            )
        per_node = knob.gpus_per_node or 8
        pool = {
            "name": f"added-{knob.gpu_model}".lower(),
            "gpu_model": knob.gpu_model,
            "gpus_per_node": per_node,
            "usd_per_gpu_hour": knob.usd_per_gpu_hour,
        }
        if onprem:
            pool["nodes"] = math.ceil(knob.gpus / per_node)
        else:
            pool["max_gpus"] = knob.gpus
            site["burst_quota_gpus"] = int(site.get("burst_quota_gpus") or 0) + knob.gpus
        pools.append(pool)
        build.notes.append(f"{at}: new pool {site['name']}/{pool['name']} with {knob.gpus} {knob.gpu_model}")
        return
    if onprem:
        per_node = int(pool["gpus_per_node"])
        added = math.ceil(knob.gpus / per_node)
        pool["nodes"] = int(pool["nodes"]) + added
        build.notes.append(f"{at}: {site['name']}/{pool['name']} +{added} nodes ({added * per_node} GPUs)")
    else:
        quota = int(site.get("burst_quota_gpus") or 0)
        pool["max_gpus"] = int(pool.get("max_gpus") or quota) + knob.gpus
        site["burst_quota_gpus"] = quota + knob.gpus
        build.notes.append(f"{at}: {site['name']}/{pool['name']} quota +{knob.gpus} GPUs")


def _scale_price(doc: dict[str, Any], knob: ScalePrice, at: str, scenario: Scenario) -> None:
    hit = 0
    for s in doc["sites"]:
        if not fnmatch.fnmatchcase(s["name"], knob.sites):
            continue
        for p in s["pools"]:
            if fnmatch.fnmatchcase(p["gpu_model"], knob.gpu_model):
                p["usd_per_gpu_hour"] = float(p["usd_per_gpu_hour"]) * knob.factor
                if knob.spot and p.get("spot_usd_per_gpu_hour") is not None:
                    p["spot_usd_per_gpu_hour"] = float(p["spot_usd_per_gpu_hour"]) * knob.factor
                hit += 1
    if not hit:
        raise scenario.fail(at, f"no pool matches sites={knob.sites!r} gpu_model={knob.gpu_model!r}")


def _egress(doc: dict[str, Any], knob: Egress, at: str, scenario: Scenario) -> None:
    changes = knob.model_dump(exclude={"sites"}, exclude_none=True)
    if not changes:
        raise scenario.fail(at, "give at least one tariff to change")
    hit = 0
    for s in doc["sites"]:
        if fnmatch.fnmatchcase(s["name"], knob.sites):
            s["egress"] = {**s.get("egress", {}), **changes}
            hit += 1
    if not hit:
        raise scenario.fail(f"{at}.sites", f"no site matches {knob.sites!r}")


def _forbidden(doc: dict[str, Any], knob: Forbid, at: str, scenario: Scenario) -> set[str]:
    if knob.sites is not None:
        found = {s["name"] for s in doc["sites"] if fnmatch.fnmatchcase(s["name"], knob.sites)}
        what = f"sites={knob.sites!r}"
    elif knob.region is not None:
        found = {s["name"] for s in doc["sites"] if s.get("region") == knob.region}
        what = f"region={knob.region!r}"
    else:
        found = {s["name"] for s in doc["sites"] if s.get("jurisdiction") == knob.jurisdiction}
        what = f"jurisdiction={knob.jurisdiction!r}"
    if not found:
        raise scenario.fail(at, f"{what} matches no site")
    return found

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from placers.catalog import CatalogError, SiteKind, load_catalog, parse_catalog

DEFAULT = Path(__file__).parents[2] / "placers" / "data" / "default_catalog.yaml"


def raw() -> dict:
    return yaml.safe_load(DEFAULT.read_text())


def test_default_catalog_meets_the_product_minimum(catalog):
    onprem = [s for s in catalog.sites if s.kind is SiteKind.ONPREM]
    cloud = [s for s in catalog.sites if s.kind is SiteKind.CLOUD]
    assert len(onprem) >= 2
    assert len(cloud) >= 6
    assert len({s.provider for s in cloud}) >= 2
    assert {"US", "EU"} <= {s.jurisdiction for s in cloud}
    for s in onprem:
        for p in s.pools:
            assert p.nodes >= 1 and p.gpus_per_node >= 1 and p.usd_per_gpu_hour > 0 and not p.elastic
    for s in cloud:
        assert s.burst_quota_gpus and s.burst_quota_gpus > 0
        assert any(p.spot_usd_per_gpu_hour for p in s.pools) or s.provider == "lambda"
    assert catalog.gpu_models[catalog.reference_gpu].speed == 1.0


def test_every_ordered_pair_has_egress_and_bandwidth(catalog):
    n = len(catalog.sites)
    assert catalog.egress_usd_per_gb.shape == (n, n)
    assert np.all(np.diag(catalog.egress_usd_per_gb) == 0)
    off = ~np.eye(n, dtype=bool)
    assert np.all(np.isfinite(catalog.egress_usd_per_gb)) and np.all(catalog.egress_usd_per_gb >= 0)
    assert np.all(np.isfinite(catalog.bandwidth_gbps[off])) and np.all(catalog.bandwidth_gbps[off] > 0)
    i = catalog.site_index
    # internet egress out of AWS, inter-region inside AWS, direct-connect link, free out of on-prem
    assert catalog.egress_usd_per_gb[i["aws-us-east-1"], i["gcp-us-central1"]] == pytest.approx(0.09)
    assert catalog.egress_usd_per_gb[i["aws-us-east-1"], i["aws-us-west-2"]] == pytest.approx(0.02)
    assert catalog.egress_usd_per_gb[i["aws-us-west-2"], i["onprem-sjc"]] == pytest.approx(0.02)
    assert catalog.bandwidth_gbps[i["onprem-sjc"], i["aws-us-west-2"]] == 40
    assert catalog.egress_usd_per_gb[i["gcp-us-central1"], i["gcp-europe-west4"]] == pytest.approx(0.05)


def test_every_figure_names_a_known_source():
    doc = raw()
    sources = set(doc["sources"])
    cited = [g["source"] for g in doc["gpu_models"].values()]
    for s in doc["sites"]:
        cited.append(s["egress"]["source"])
        cited += [p["source"] for p in s["pools"]]
    assert cited and all(c in sources for c in cited)


def test_rtt_covers_every_user_region(catalog):
    for s in catalog.sites:
        assert set(s.rtt_ms) == set(catalog.user_regions)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["sites"][0]["pools"][0].update(gpu_model="H900"), "sites[0].pools[0].gpu_model"),
        (lambda d: d["sites"][2]["pools"][1].update(usd_per_gpu_hour=-1), "sites[2].pools[1].usd_per_gpu_hour"),
        (lambda d: d["sites"][3].pop("egress"), "sites[3].egress"),
        (lambda d: d["sites"][1]["rtt_ms"].pop("us-east"), "sites[1].rtt_ms"),
        (lambda d: d["sites"][4].update(name=d["sites"][2]["name"]), "sites[4].name"),
        (lambda d: d["sites"][0]["pools"][0].pop("nodes"), "sites[0].pools[0].nodes"),
        (lambda d: d["sites"][2].pop("burst_quota_gpus"), "sites[2].burst_quota_gpus"),
        (lambda d: d["links"][0].update({"to": "nowhere"}), "links[0].to"),
        (lambda d: d["datasets"][0].update(replica_sites=["mars-1"]), "datasets[0].replica_sites"),
        (lambda d: d.update(reference_gpu="H100-80GB"), "gpu_models.H100-80GB.speed"),
        (lambda d: d["sites"][5]["pools"][0].update(source="nowhere"), "sites[5].pools[0].source"),
        (lambda d: d["sites"][0].update(colour="blue"), "sites[0].colour"),
    ],
)
def test_malformed_catalog_names_file_and_field(tmp_path, mutate, field):
    doc = raw()
    mutate(doc)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CatalogError) as err:
        load_catalog(path)
    assert err.value.source == str(path)
    assert err.value.field == field, str(err.value)
    assert str(path) in str(err.value)


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sites: [unclosed\n")
    with pytest.raises(CatalogError, match=r"bad\.yaml: <yaml>"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match="<root>"):
        parse_catalog([1, 2], "list.yaml")


def test_user_catalog_is_used(tmp_path):
    doc = raw()
    doc["sites"][0]["pools"][0]["usd_per_gpu_hour"] = 0.5
    path = tmp_path / "cheap.yaml"
    path.write_text(yaml.safe_dump(doc))
    cat = load_catalog(path)
    assert cat.pool("onprem-sjc/h100").usd_per_gpu_hour == 0.5
    assert cat.source == str(path)

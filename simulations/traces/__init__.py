"""Trace loaders: Alibaba openb 2023, Microsoft Philly, and a documented generic CSV format."""

from simulations.traces.base import LoadReport, TraceError, TraceJob, TraceNode
from simulations.traces.generic import load_generic_jobs
from simulations.traces.openb import OpenbPod, load_openb_nodes, load_openb_pods, replay_jobs
from simulations.traces.philly import load_philly_jobs, load_philly_vc_nodes

__all__ = [
    "LoadReport",
    "OpenbPod",
    "TraceError",
    "TraceJob",
    "TraceNode",
    "load_generic_jobs",
    "load_openb_nodes",
    "load_openb_pods",
    "load_philly_jobs",
    "load_philly_vc_nodes",
    "replay_jobs",
]

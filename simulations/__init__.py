"""Gravity's simulator: replay real cluster traces through the production scheduler.

traces/      loaders for Alibaba openb 2023, Microsoft Philly and a generic CSV format
sites        on-prem sites built from a trace's node list, joined with cloud sites
scenario     YAML scenarios (catalog, generators, placer, what-if knobs), validated
workload     trace jobs -> JobSpecs, with seeded generators for what traces do not record
engine       the event heap and the virtual clock driving scheduler.service.SchedulerService
metrics      cost, deadlines, JCT and waits, utilisation, burst share, fragmentation; cost by
             tag through the FinOps showback (scheduler.finops.showback), as CostReport does
report       JSON, CSV, PNG and terminal output
sweep        many scenarios in parallel on Ray
cli          `gravity simulate`, `gravity compare`, `gravity sweep`
"""

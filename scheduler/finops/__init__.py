"""FinOps governance: tag taxonomy, cost ledger, budgets and alerts, showback, audit, metrics.

Pure pieces (periods, costing, showback, audit texts) take job records and return values;
`governance.Governance` wires them to the store and the scheduling cycle.
"""

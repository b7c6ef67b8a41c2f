"""The audit chain: append-only, hash-chained events per tenant, signed checkpoints, the event
registry, verification and export.

A Django app (label `audit`) that imports no other app: its foreign keys name
"tenants.Tenant" by string, and its writer takes any tenant with a `pk`.
"""

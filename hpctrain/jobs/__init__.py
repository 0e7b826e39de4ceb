"""What a job is, before any scheduler sees it: requests, shell quoting, templates, the split,
and the kraken and torchrun builders. Pure: nothing here submits, and nothing touches a cluster.

Imports `runtime` (alert rules) and `core`.
"""

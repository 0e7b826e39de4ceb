"""One module per user task (init, setup, push, models, submit, follow, fetch, clean), each the
library behind one CLI command: load the workspace, plan, act through a backend, return records.

Imports `backends`, `cluster` (its records), `jobs`, `runtime` and `core`; never prints.
"""

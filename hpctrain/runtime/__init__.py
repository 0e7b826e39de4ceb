"""What runs beside a job: the runner (submitit's payload), its events file, log parsing, alerts.

Imports only `core`; it must run on the cluster's Python, on a compute node.
"""

"""The cluster side: the tree under the cluster root, the job registry, the schedulers, and the
operations every job command needs (`ClusterOps`). Runs on the login node, or in the embedded
default on the laptop itself. Imports `jobs`, `runtime` and `core`.
"""

"""hpctrain: train kraken and torchrun jobs on a Slurm cluster from a laptop."""

__version__ = "0.1.0"

"""The bottom layer: errors, names, the atomic file helpers, configuration records, the job folder.

Everything above may import it; it imports nothing of hpctrain's outside itself.
"""

"""GPU sampling inside a job: `nvidia-smi` every few seconds, one `gpu` event per sample.

The runner starts a `Sampler` beside the job's process and stops it when that process ends. A
sample is each GPU's utilisation (percent) and memory used and total (MiB), as nvidia-smi reports
them. Where nvidia-smi is missing, fails, times out or prints what it should not, sampling stops
with one `gpu_unavailable` event saying why; the job itself is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from typing import Callable

QUERY = ("--query-gpu=utilization.gpu,memory.used,memory.total", "--format=csv,noheader,nounits")
DEFAULT_SECONDS = 30.0  # between two samples; job.json's `gpu_sample_seconds` changes it
SETTING = "gpu_sample_seconds"
TIMEOUT = 20.0  # seconds one nvidia-smi may take
NOT_FOUND = "nvidia-smi not found on the node"
# CUDA_VISIBLE_DEVICES as Slurm sets it: indices or GPU UUIDs, which nvidia-smi --id accepts
_DEVICES = re.compile(r"[A-Za-z0-9-]+(,[A-Za-z0-9-]+)*")


class Unavailable(Exception):
    """nvidia-smi cannot give a sample; the message says why, in words."""


def interval(settings: dict) -> float:
    """Seconds between samples from job.json (0 turns sampling off); ValueError if it is not a
    number of seconds."""
    value = settings.get(SETTING, DEFAULT_SECONDS)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"damaged ('{SETTING}' must be a number of seconds ≥ 0)")
    return float(value)


def _number(text: str) -> float | None:
    """One csv field; '[N/A]' or '[Not Supported]' (MIG, some boards) is None."""
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse(out: str) -> dict:
    """nvidia-smi's csv lines as one `gpu` event: a list per quantity, one entry per GPU."""
    rows = [line.split(",") for line in out.splitlines() if line.strip()]
    if not rows:
        raise Unavailable("nvidia-smi lists no GPU")
    if any(len(row) != 3 for row in rows):
        raise Unavailable(f"nvidia-smi printed {out.strip().splitlines()[0][:120]!r}")
    values = [[_number(field) for field in row] for row in rows]
    if all(v is None for row in values for v in row):
        raise Unavailable("nvidia-smi reports no figure for any GPU")
    utilization, used, total = (list(column) for column in zip(*values))
    return {"event": "gpu", "utilization": utilization, "memory_used": used,
            "memory_total": total}


def command(env: dict) -> list[str]:
    """nvidia-smi with the job's own GPUs (CUDA_VISIBLE_DEVICES) when Slurm named them."""
    found = shutil.which("nvidia-smi", path=env.get("PATH"))
    if not found:
        raise Unavailable(NOT_FOUND)
    devices = env.get("CUDA_VISIBLE_DEVICES", "")
    return [found, *QUERY, *([f"--id={devices}"] if _DEVICES.fullmatch(devices) else [])]


def sample(env: dict) -> dict:
    """One `gpu` event; Unavailable when nvidia-smi cannot give one."""
    argv = command(env)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", env=env,
                              stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"nvidia-smi did not answer within {TIMEOUT:.0f} s") from None
    except OSError as e:
        raise Unavailable(f"nvidia-smi cannot run ({e.strerror or type(e).__name__})") from None
    if done.returncode:
        said = " ".join((done.stdout + done.stderr).split())[:200]
        raise Unavailable(f"nvidia-smi failed (exit code {done.returncode}): {said}")
    return parse(done.stdout)


class Sampler:
    """A daemon thread that emits a `gpu` event now and every `seconds` until `stop()`."""

    def __init__(self, emit: Callable[[dict], None], seconds: float, env: dict | None = None):
        self.emit = emit
        self.seconds = seconds
        self.env = dict(os.environ if env is None else env)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hpctrain-gpu", daemon=True)

    def start(self) -> "Sampler":
        if self.seconds > 0:
            self._thread.start()
        return self

    def stop(self, timeout: float = TIMEOUT + 5) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                event = sample(self.env)
            except Unavailable as e:
                self._say({"event": "gpu_unavailable", "reason": str(e)})
                return
            except Exception as e:  # a sampler's bug stops sampling, never the job
                self._say({"event": "gpu_unavailable",
                           "reason": f"GPU sampling stopped: {type(e).__name__}: {e}"})
                return
            self._say(event)
            self._stop.wait(self.seconds)

    def _say(self, event: dict) -> None:
        try:
            self.emit(event)
        except Exception:  # an events file that cannot take it: the job goes on
            pass

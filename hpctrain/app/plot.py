"""`hpctrain plot JOB [JOB ...]`: the training curves of one job or several (overlaid) as a PNG,
and the same picture for `fetch` (curves.png beside the model) and `report --html`.

The curves are folded on the cluster side (runtime/curves.py); only this module draws, with
matplotlib (the `plot` extra), imported inside `render` with the Agg canvas: no display needed.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import connect
from ..core.config import Workspace
from ..core.errors import HpctrainError
from ..core.files import atomic_target
from ..runtime.curves import Curve
from .sweep import expand_targets

INSTALL = "pip install 'hpctrain[plot]'"
CURVES_PNG = "curves.png"  # what fetch writes beside the model


class MissingMatplotlib(HpctrainError):
    """Raised when a picture is asked for and matplotlib (the `plot` extra) is not installed."""


@dataclass
class PlotResult:
    path: Path
    curves: list[Curve]
    notes: list[str] = field(default_factory=list)  # jobs left out of the picture, and why


def job_curves(workspace: Workspace, targets: list[str]) -> list[Curve]:
    with connect(workspace) as transport:
        return transport.cluster.curves(expand_targets(transport.cluster, targets))


def plot(workspace: Workspace, targets: list[str], output: Path | None = None) -> PlotResult:
    """Draw the jobs' curves into `output` (default: curves-jobN.png here)."""
    curves = job_curves(workspace, targets)
    drawn, notes = drawable(curves)
    path = output or Path(default_name([c.job for c in curves]))
    save(drawn, path)
    return PlotResult(path, drawn, notes)


def default_name(job_ids: list[int]) -> str:
    return f"curves-job{jobs_in_name(job_ids)}.png"


def jobs_in_name(job_ids: list[int]) -> str:
    """The jobs, as a file name shows them: 3, 3-4-5, 3-4-5-6-and-2-more."""
    shown = "-".join(str(i) for i in job_ids[:4])
    return shown + (f"-and-{len(job_ids) - 4}-more" if len(job_ids) > 4 else "")


def drawable(curves: list[Curve]) -> tuple[list[Curve], list[str]]:
    """The curves that have epochs, and one note per job that has none; refused if none has."""
    drawn = [c for c in curves if c.epochs]
    notes = [f"job {c.job}: no epoch has ended yet (no metrics to draw); left out"
             for c in curves if not c.epochs]
    if not drawn:
        which = ", ".join(str(c.job) for c in curves)
        raise HpctrainError(f"job(s) {which} have no per-epoch metrics yet: plot them once an "
                            "epoch has ended ('hpctrain status' shows the epoch)")
    return drawn, notes


def save(curves: list[Curve], path: Path) -> Path:
    """Write the picture of `curves` (every one with epochs) to `path`, atomically."""
    data = render(curves)
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)
    return path


def render(curves: list[Curve]) -> bytes:
    """The PNG of `curves`: the validation metric on top, the training loss below (when any job
    has one); each job one colour, its best epoch a star, its base model's score a dashed line."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise MissingMatplotlib(f"drawing curves needs matplotlib: {INSTALL}") from None
    with_loss = any(c.loss for c in curves)
    figure = Figure(figsize=(8, 6.5 if with_loss else 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2 if with_loss else 1, 1, sharex=True, squeeze=False)[:, 0]
    for index, curve in enumerate(curves):
        _draw_metric(axes[0], curve, f"C{index % 10}", len(curves) > 1)
        if with_loss and curve.loss:
            axes[1].plot(curve.epochs, _nan(curve.losses), color=f"C{index % 10}",
                         marker=".", label=f"job {curve.job}" if len(curves) > 1 else curve.loss)
    metrics = sorted({c.metric for c in curves if c.metric})
    axes[0].set_ylabel(", ".join(metrics) or "validation metric")
    axes[0].set_title(_title(curves))
    axes[0].legend(fontsize="small", loc="best")
    if with_loss:
        axes[1].set_ylabel(", ".join(sorted({c.loss for c in curves if c.loss})))
        axes[1].legend(fontsize="small", loc="best")
        if _spread([v for c in curves for v in c.losses if v is not None]) > 100:
            axes[1].set_yscale("log")  # a loss falling from 80 to 0.1 stays readable
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel("epoch")
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _draw_metric(ax, curve: Curve, colour: str, several: bool) -> None:
    """One job's metric; with several jobs the legend names each job once (the title says
    what a star is), with one job it names the star and the line."""
    ax.plot(curve.epochs, _nan(curve.values), color=colour, marker=".",
            label=f"job {curve.job}" if several else (curve.metric or f"job {curve.job}"))
    if curve.best_epoch is not None and curve.best_value is not None:
        ax.plot([curve.best_epoch], [curve.best_value], color=colour, marker="*", markersize=16,
                linestyle="none", label="_nolegend_" if several else
                f"best epoch {curve.best_epoch} ({curve.best_value:.3f})")
    if curve.base_value is not None:
        model = curve.base_test.get("model")
        name = f"base model {model}" if model else "base model"
        ax.axhline(curve.base_value, color=colour, linestyle="--", linewidth=1.2,
                   label=f"{f'job {curve.job}: ' if several else ''}{name} "
                         f"({curve.base_value:.3f})")


def _title(curves: list[Curve]) -> str:
    projects = ", ".join(sorted({c.project for c in curves}))
    jobs = ", ".join(str(c.job) for c in curves)
    if len(curves) == 1:
        return f"{projects}: job {jobs}"
    dashed = ", dashed: base model" if any(c.base_value is not None for c in curves) else ""
    return f"{projects}: jobs {jobs} (★ best epoch{dashed})"


def _spread(values: list[float]) -> float:
    """max / min of positive values; 0 when there are none or some are not positive."""
    if not values or min(values) <= 0:
        return 0.0
    return max(values) / min(values)


def _nan(values: list) -> list[float]:
    return [math.nan if v is None else v for v in values]

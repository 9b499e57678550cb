"""Report plots: DET curves on normal-deviate axes and score histograms with verdict thresholds.

Figures are built with the object-oriented API on an Agg canvas, never through ``pyplot``: no global
backend switch, no figure registry to leak or close, and safe to call from any thread of the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from voxgate.audio.types import Float64Array
from voxgate.biometrics.metrics import det_curve, eer

__all__ = ["plot_det", "plot_histogram"]


# Acklam's rational approximation of the inverse normal CDF (relative error below 1.2e-9).
_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425

# Probabilities shown on DET axes; the lower limit adapts to the data, the upper stays at 50 %.
_DET_TICKS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
_DET_UPPER = 0.5
# Rates of 0 or 1 are clipped this far beyond the axes, so the curve runs off the edge visibly.
_DET_CLIP = 1e-6
_HIST_MAX_BINS = 100


def _polyval(coefficients: tuple[float, ...], x: Float64Array) -> Float64Array:
    """Horner evaluation, highest power first (as the coefficients are published)."""
    result = np.full_like(x, coefficients[0])
    for c in coefficients[1:]:
        result = result * x + c
    return result


def _probit(p: npt.ArrayLike) -> Float64Array:
    """Inverse standard normal CDF, vectorised, so DET axes need no scipy.

    Only defined on the open interval (0, 1); callers clip rates of 0 and 1 first.
    """
    p_arr = np.asarray(p, dtype=np.float64)
    if not np.all((p_arr > 0.0) & (p_arr < 1.0)):
        raise ValueError("probit is only defined for probabilities strictly between 0 and 1")
    x = np.empty_like(p_arr)
    low = p_arr < _P_LOW
    high = p_arr > 1.0 - _P_LOW
    mid = ~(low | high)

    q = p_arr[mid] - 0.5
    r = q * q
    x[mid] = q * _polyval(_A, r) / (_polyval(_B, r) * r + 1.0)

    q = np.sqrt(-2.0 * np.log(p_arr[low]))
    x[low] = _polyval(_C, q) / (_polyval(_D, q) * q + 1.0)

    q = np.sqrt(-2.0 * np.log1p(-p_arr[high]))
    x[high] = -_polyval(_C, q) / (_polyval(_D, q) * q + 1.0)
    return x


def _scores(values: npt.ArrayLike, name: str) -> Float64Array:
    """A 1-D float64 copy; an empty or non-finite input is refused rather than drawn as nothing."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of scores, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return arr


def _percent(p: float) -> str:
    return f"{100.0 * p:g}"


def _save(fig: Figure, path: Path) -> None:
    """Write a PNG (or whatever the suffix names), creating the report folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def plot_det(
    curves: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    path: Path,
    title: str,
) -> None:
    """Draw one DET curve per system, each with its EER marked, on normal-deviate (probit) axes.

    Probit axes turn the curves of Gaussian-like scores into near-straight lines, so systems are
    comparable at the low false-accept rates a deployment cares about. ``curves`` maps a legend label
    to ``(target_scores, nontarget_scores)``.
    """
    if not curves:
        raise ValueError("plot_det needs at least one curve")

    fig = Figure(figsize=(6.0, 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()

    smallest_rate = 1.0
    for label, (tar, non) in curves.items():
        tar_arr = _scores(tar, f"{label}: target scores")
        non_arr = _scores(non, f"{label}: non-target scores")
        _, p_miss, p_fa = det_curve(tar_arr, non_arr)
        rate = eer(tar_arr, non_arr)
        smallest_rate = min(smallest_rate, 1.0 / tar_arr.size, 1.0 / non_arr.size)

        x = _probit(np.clip(p_fa, _DET_CLIP, 1.0 - _DET_CLIP))
        y = _probit(np.clip(p_miss, _DET_CLIP, 1.0 - _DET_CLIP))
        (line,) = ax.plot(x, y, label=f"{label} (EER {100.0 * rate:.2f} %)")
        marker = _probit(np.clip([rate], _DET_CLIP, 1.0 - _DET_CLIP))
        ax.plot(marker, marker, "o", color=line.get_color(), markersize=6)

    # Lower limit: the largest tick at or below the smallest rate any curve can resolve.
    lower = max([t for t in _DET_TICKS if t <= smallest_rate], default=_DET_TICKS[0])
    ticks = [t for t in _DET_TICKS if lower <= t <= _DET_UPPER]
    limits = _probit([lower, _DET_UPPER])
    positions = _probit(ticks)
    labels = [_percent(t) for t in ticks]

    ax.plot(limits, limits, linestyle=":", color="0.6", linewidth=1.0)  # EER line
    ax.set_xlim(float(limits[0]), float(limits[1]))
    ax.set_ylim(float(limits[0]), float(limits[1]))
    ax.set_xticks(positions, labels)
    ax.set_yticks(positions, labels)
    ax.set_xlabel("False accept rate (%)")
    ax.set_ylabel("False reject rate (%)")
    ax.set_title(title)
    ax.grid(True, linestyle="--", linewidth=0.5)
    ax.set_aspect("equal")
    fig.legend(loc="outside lower center")  # below the axes: never hides a curve
    _save(fig, path)


def plot_histogram(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    path: Path,
    title: str,
    thresholds: Mapping[str, float] | None = None,
) -> None:
    """Overlay target and non-target score densities with a vertical line per verdict threshold.

    Shows at a glance where the thresholds cut into each class, which a DET curve does not. Both
    classes share the bins and are normalised to densities, since non-targets usually far outnumber
    targets.
    """
    tar_arr = _scores(tar, "target scores")
    non_arr = _scores(non, "non-target scores")
    lines = dict(thresholds or {})
    for name, value in lines.items():
        if not np.isfinite(value):
            raise ValueError(f"threshold {name!r} is not a finite score: {value}")

    edges = np.histogram_bin_edges(np.concatenate([tar_arr, non_arr]), bins="auto")
    if edges.size > _HIST_MAX_BINS + 1:
        edges = np.linspace(edges[0], edges[-1], _HIST_MAX_BINS + 1)

    fig = Figure(figsize=(7.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(non_arr, bins=edges.tolist(), density=True, alpha=0.5, label=f"non-target (n={non_arr.size})")
    ax.hist(tar_arr, bins=edges.tolist(), density=True, alpha=0.5, label=f"target (n={tar_arr.size})")
    for i, (name, value) in enumerate(lines.items()):
        ax.axvline(value, color=f"C{i + 2}", linestyle="--", label=f"{name} ({value:.3g})")
    ax.set_xlabel("Score")
    ax.set_ylabel("Density")
    ax.set_title(title)
    ax.legend(loc="upper right")  # not "best": it searches every bar and warns on large data
    _save(fig, path)

"""Report plots are written as real PNGs, and the probit behind the DET axes is accurate."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from matplotlib.image import imread

from voxgate.evaluation.plots import _probit, plot_det, plot_histogram

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_drawn_png(path: Path) -> None:
    """A PNG by its magic bytes that decodes to an image with more than one colour in it."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.01  # not a blank canvas


@pytest.mark.parametrize(
    "p", [1e-12, 1e-6, 1e-3, 0.02, 0.02425, 0.1, 0.3, 0.5, 0.7, 0.9, 0.97575, 0.999, 1 - 1e-9]
)
def test_probit_matches_the_standard_library(p: float) -> None:
    expected = NormalDist().inv_cdf(p)
    assert float(_probit([p])[0]) == pytest.approx(expected, rel=2e-9, abs=1e-12)


def test_probit_refuses_certainties() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        _probit([0.5, 1.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        _probit([0.0])


def test_plot_det_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    curves = {
        "ecapa": (rng.normal(3.0, 1.0, 500), rng.normal(0.0, 1.0, 5000)),
        "campplus": (rng.normal(1.0, 1.0, 100), rng.normal(0.0, 1.0, 100)),
        # Rates of exactly 0 and 1 must be clipped, not turned into infinities.
        "perfect": (np.array([5.0, 6.0]), np.array([0.0, 1.0])),
        "tied": (np.zeros(10), np.zeros(10)),
    }
    path = tmp_path / "report" / "det.png"  # the folder does not exist yet
    plot_det(curves, path, title="DET on dev trials")
    _assert_drawn_png(path)


def test_plot_det_refuses_nothing_to_draw(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one curve"):
        plot_det({}, tmp_path / "det.png", title="empty")
    with pytest.raises(ValueError, match="ecapa: target scores"):
        plot_det({"ecapa": (np.array([]), np.array([0.0]))}, tmp_path / "det.png", title="empty")
    assert not (tmp_path / "det.png").exists()


def test_plot_histogram_writes_a_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "hist.png"
    plot_histogram(
        rng.normal(2.0, 1.0, 300),
        rng.normal(0.0, 1.0, 20_000),
        path,
        title="Scores",
        thresholds={"accept": 1.5, "reject": 0.2},
    )
    _assert_drawn_png(path)


def test_plot_histogram_without_thresholds_and_with_constant_scores(tmp_path: Path) -> None:
    path = tmp_path / "hist.png"
    plot_histogram([0.5, 0.5], [0.5], path, title="Degenerate", thresholds=None)
    _assert_drawn_png(path)


def test_plot_histogram_refuses_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-target scores"):
        plot_histogram([1.0], [], tmp_path / "hist.png", title="x", thresholds=None)
    with pytest.raises(ValueError, match="accept"):
        plot_histogram([1.0], [0.0], tmp_path / "hist.png", title="x", thresholds={"accept": math.nan})
    assert not (tmp_path / "hist.png").exists()

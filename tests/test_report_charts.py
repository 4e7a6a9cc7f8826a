"""The report's line charts: round percentage ticks, and legends that cover no line.

A chart's percent axis once read "2%, 5%, 8%, 13%" (ticks at 2.5% steps printed
without decimals) and the returns chart's legend sat on its lines. The figures
are inspected as matplotlib draws them: tick labels must state their tick's value
exactly, at a 1-2-5 spacing, and a legend must lie outside the plotting area.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from serving.report.charts import line_figure

MONTHS = pd.date_range("2024-01-01", periods=12, freq="MS")


def _labels(ax) -> list[tuple[float, str]]:
    ax.figure.canvas.draw()
    low, high = ax.get_ylim()
    return [(tick.get_loc(), tick.label1.get_text()) for tick in ax.yaxis.get_major_ticks()
            if low <= tick.get_loc() <= high]


@pytest.mark.parametrize(("low", "high"), [(0.02, 0.14), (0.0, 0.9), (0.001, 0.004),
                                           (0.35, 0.42), (0.9, 1.15)])
def test_percent_ticks_are_round_and_labelled_exactly(low, high):
    values = pd.Series(np.linspace(low, high, len(MONTHS)), index=MONTHS)
    ax = line_figure({"customers": values}, title="churn").axes[0]
    labels = _labels(ax)
    assert len(labels) >= 3, labels
    shown = []
    for value, text in labels:
        match = re.fullmatch(r"(-?\d+(?:\.\d+)?)%", text.replace("\u2212", "-"))
        assert match, f"tick label {text!r} is not a percentage"
        shown.append(float(match.group(1)))
        assert math.isclose(shown[-1], 100 * value, abs_tol=1e-9), \
            f"label {text!r} does not state its tick's value {100 * value:g}%"
    spacing = np.diff(shown)
    mantissa = spacing[0] / 10 ** math.floor(math.log10(spacing[0]))
    assert np.allclose(spacing, spacing[0]) and round(mantissa, 6) in (1, 2, 5), shown


def test_a_legend_sits_outside_the_plotting_area():
    rates = {name: pd.Series(np.linspace(a, b, len(MONTHS)), index=MONTHS)
             for name, a, b in (("returned", 0.02, 0.2), ("cancelled", 0.15, 0.05),
                                ("unclaimed", 0.1, 0.1))}
    figure = line_figure(rates, title="returns")
    figure.canvas.draw()
    ax = figure.axes[0]
    legend = ax.get_legend().get_window_extent()
    plotting = ax.get_window_extent()
    assert not legend.overlaps(plotting), (legend, plotting)
    assert figure.bbox.contains(legend.x0, legend.y0) and \
        figure.bbox.contains(legend.x1, legend.y1), "the legend fits in the image"
    labels = [text.get_window_extent() for text in ax.get_xticklabels() if text.get_text()]
    assert not any(legend.overlaps(label) for label in labels), "nor covers the month labels"


def test_one_line_needs_no_legend():
    figure = line_figure({"customers": pd.Series(0.1, index=MONTHS)}, title="churn")
    assert figure.axes[0].get_legend() is None

"""The report's charts: matplotlib figures drawn off-screen and embedded as base64 PNGs.

Figures are made on the Agg canvas when a chart is drawn, so importing this
module sets no matplotlib backend; the file needs no network to view them.
"""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float = 6.4, height: float = 2.9) -> Figure:
    """A matplotlib figure on the Agg canvas, created here so importing sets no backend.

    Margins are fixed rather than computed (constrained layout draws every
    chart twice, which doubles the report's rendering time).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.88, bottom=0.15)
    FigureCanvasAgg(fig)
    return fig


def png_base64(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _style(ax: Any, *, percent: bool = False) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    if percent:
        _percent_ticks(ax)
    ax.tick_params(labelsize=9)


def _percent_ticks(ax: Any) -> None:
    """Ticks at round percentages (1, 2 or 5 × a power of ten), labelled with just the
    decimals their spacing needs: "2%, 4%, 6%" or "0.5%, 1.0%", never 12.5% shown as 13%."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10], min_n_ticks=4))
    ticks = ax.get_yticks()
    spacing = 100 * float(np.min(np.diff(ticks))) if len(ticks) > 1 else 1.0
    decimals = max(0, math.ceil(-math.log10(spacing) - 1e-9)) if spacing > 0 else 0
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=decimals))


def line_chart(series: dict[str, pd.Series], *, title: str, percent: bool = True,
                reference: float | None = None) -> str:
    """A monthly line chart as a PNG (see `line_figure`)."""
    return png_base64(line_figure(series, title=title, percent=percent, reference=reference))


def line_figure(series: dict[str, pd.Series], *, title: str, percent: bool = True,
                 reference: float | None = None) -> Figure:
    """Monthly lines on positional x (month labels set by hand: cheaper than date axes).

    With several lines the legend sits in a row under the axes, where it can cover none.
    """
    months = sorted(set().union(*(set(values.index) for values in series.values())))
    positions = np.arange(len(months))
    several = len(series) > 1
    fig = new_figure(height=3.3 if several else 2.9)
    if several:
        fig.subplots_adjust(bottom=0.27)
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.plot(positions, values.reindex(months).to_numpy(dtype=float), marker="o",
                markersize=3, label=label)
    step = max(1, math.ceil(len(months) / 8))
    ax.set_xticks(positions[::step], [f"{pd.Timestamp(m):%b %y}" for m in months[::step]])
    if reference is not None:
        ax.axhline(reference, color="grey", linewidth=0.8, linestyle="--")
    ax.set_title(title, fontsize=11, loc="left")
    _style(ax, percent=percent)
    if several:
        ax.legend(fontsize=9, frameon=False, loc="upper center", ncols=len(series),
                  bbox_to_anchor=(0.5, -0.12))
    return fig


def score_histogram(scores: pd.DataFrame) -> str:
    probabilities = scores["churn_probability"].dropna().to_numpy(dtype=float)
    fig = new_figure(8.0, 2.8)
    fig.subplots_adjust(left=0.1, bottom=0.18)
    ax = fig.add_subplot()
    ax.hist(probabilities, bins=np.linspace(0, 1, 21).tolist(), color="#2563eb", edgecolor="white")
    ax.set_xlabel("churn probability", fontsize=9)
    ax.set_ylabel("customers", fontsize=9)
    ax.set_title("Distribution of churn probability (customers in the population)",
                 fontsize=10, loc="left")
    _style(ax)
    return png_base64(fig)

"""The figures of the results pages, drawn with matplotlib (no pyplot: no global state) as SVG.

Output is byte-for-byte repeatable: a fixed ``svg.hashsalt``, no date in the metadata, glyphs as
paths (the picture does not depend on the reader's fonts). A file is rewritten only when its bytes
change, so an unchanged figure does not make Sphinx rebuild the page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg")  # before anything imports a backend: no display needed

from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

#: What each kind of bar is; the legend names the kinds.
KIND_COLOURS = {"ideal": "#555555", "model": "#88aabb", "measured": "#2277aa"}
STYLE: Any = {"svg.hashsalt": "vcdocs", "svg.fonttype": "path", "font.family": "DejaVu Sans", "font.size": 9,
         "axes.titlesize": 10, "axes.grid": True, "grid.color": "#dddddd", "axes.axisbelow": True}
PAGE_KIB = 4


class Bar(NamedTuple):
    label: str
    value: float
    kind: str  # a key of KIND_COLOURS


class Series(NamedTuple):
    label: str
    points: Sequence[tuple[float, float]]
    colour: str


class Mark(NamedTuple):
    """A moment on the time axis, drawn as a vertical line."""

    x: float
    label: str
    colour: str
    style: str = "--"


def _pages_to_mib(pages: Any) -> Any:
    return pages * PAGE_KIB / 1024


def _mib_to_pages(mib: Any) -> Any:
    return mib * 1024 / PAGE_KIB


def _thousands(x: float, _pos: int) -> str:
    return f"{x:,.0f}"


def _save(fig: Figure, path: Path, title: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Title": title})
    data = buf.getvalue()
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def bars(path: Path, rows: Sequence[Bar], title: str, unit: str = "full pages sent") -> None:
    """Horizontal bars, top to bottom in ``rows`` order, each labelled with its value; a second x axis
    gives the same amount in MiB (4 KiB pages)."""
    with rc_context(STYLE):
        fig = Figure(figsize=(7.2, 0.42 * len(rows) + 1.5), layout="constrained")
        ax = fig.add_subplot()
        ys = range(len(rows))[::-1]
        colours = [KIND_COLOURS[r.kind] for r in rows]
        drawn = ax.barh(list(ys), [r.value for r in rows], color=colours, height=0.65)
        ax.bar_label(drawn, labels=[f"{r.value:,.0f}" for r in rows], padding=3, fontsize=8)
        ax.set_yticks(list(ys), [r.label for r in rows])
        ax.set_xlim(0, max(r.value for r in rows) * 1.15)
        ax.xaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.set_xlabel(f"{unit} (4 KiB pages)")
        ax.grid(axis="y", visible=False)
        mib = ax.secondary_xaxis("top", functions=(_pages_to_mib, _mib_to_pages))
        mib.set_xlabel("MiB")
        ax.set_title(title, pad=8)
        kinds = [k for k in KIND_COLOURS if any(r.kind == k for r in rows)]
        handles = [Patch(color=KIND_COLOURS[k], label=k) for k in kinds]
        ax.legend(handles=handles, loc="upper right", frameon=True)
        _save(fig, path, title)


def lines(path: Path, series: Sequence[Series], title: str, xlabel: str, ylabel: str,
          marks: Sequence[Mark] = ()) -> None:
    """Line plots against time, with vertical ``marks``."""
    with rc_context(STYLE):
        fig = Figure(figsize=(7.2, 3.6), layout="constrained")
        ax = fig.add_subplot()
        for s in series:
            ax.plot([x for x, _ in s.points], [y for _, y in s.points], color=s.colour, label=s.label,
                    marker="o", markersize=2.5, linewidth=1.6)
        for m in marks:
            ax.axvline(m.x, color=m.colour, linestyle=m.style, linewidth=1.2, label=m.label)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc="upper left", frameon=True)  # the curves rise to the right
        _save(fig, path, title)


def grouped(path: Path, groups: Sequence[str], series: Sequence[Series], title: str, xlabel: str,
            marks: Sequence[Mark] = ()) -> None:
    """Horizontal bars grouped by ``groups`` (top to bottom), one bar per series in each group (a series'
    points are (group index, value)), with vertical ``marks`` (a target, say)."""
    with rc_context(STYLE):
        fig = Figure(figsize=(7.2, 0.3 * len(groups) * len(series) + 1.6), layout="constrained")
        ax = fig.add_subplot()
        height = 0.8 / max(1, len(series))
        top = len(groups) - 1
        for i, s in enumerate(series):
            ys = [top - g + 0.4 - height * (i + 0.5) for g, _ in s.points]  # the first series on top
            drawn = ax.barh(ys, [v for _, v in s.points], height=height * 0.9, color=s.colour, label=s.label)
            ax.bar_label(drawn, labels=[f"{v:.2f}" for _, v in s.points], padding=2, fontsize=7)
        for m in marks:
            ax.axvline(m.x, color=m.colour, linestyle=m.style, linewidth=1.2, label=m.label)
        ax.set_yticks(range(len(groups))[::-1], list(groups))
        ax.set_xlim(0, max((v for s in series for _, v in s.points), default=1.0) * 1.18)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        ax.set_title(title, pad=8)
        ax.legend(loc="lower right", frameon=True, fontsize=7)
        _save(fig, path, title)

"""The report's plots, drawn with matplotlib's object-oriented API on the Agg canvas rather than through pyplot, so
drawing one neither switches the caller's global backend nor leaves figures alive in pyplot's registry. `alignkit
eval`'s report and `alignkit compare` draw with them."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from alignkit.utils.io import atomic_write_bytes

# tab10: distinguishable, and each model keeps its colour across every plot.
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point dominates, in the order given; both coordinates are better when higher.

    A point is dominated when another is at least as good on both coordinates and strictly better on one, so
    identical points do not dominate each other: tied models are all on the front.
    """
    front = []
    for name, (x, y) in points.items():
        dominated = any(ox >= x and oy >= y and (ox > x or oy > y)
                        for other, (ox, oy) in points.items() if other != name)
        if not dominated:
            front.append(name)
    return front


def finite(value: Any) -> float | None:
    """A finite float, or None for null, non-numbers and NaN/inf (which json.dump writes for failed metrics)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def plain(text: Any) -> str:
    """Text for a plot label: matplotlib reads a pair of "$" as mathtext (and fails on malformed math), so a model
    or group name with dollar signs is escaped to show them literally."""
    return str(text).replace("$", r"\$")


def save_png(fig, path: Path) -> None:
    """Render on the Agg canvas and write the PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())


def bar_plot(breakdown: dict, models: list[str], colors: dict[str, str], title: str, field: str | None,
              path: Path) -> bool:
    """Grouped horizontal bars (groups down the side, one bar per model), which keep long group names readable.
    Returns False, writing nothing, when no value is present."""
    from matplotlib.figure import Figure

    columns = [m for m in dict.fromkeys(models + [str(m) for m in breakdown]) if breakdown.get(m)]
    groups = list(dict.fromkeys(g for m in columns for g in breakdown[m]))

    def value(m: str, group: str) -> float | None:
        v = breakdown[m].get(group)
        return finite(v.get(field) if isinstance(v, dict) else None) if field else finite(v)

    values = {m: [value(m, g) for g in groups] for m in columns}
    present = [v for vs in values.values() for v in vs if v is not None]
    if not present:
        return False

    bar = 0.8 / len(columns)
    height = 1.4 + len(groups) * max(0.34, 0.16 * len(columns))
    fig = Figure(figsize=(8.2, height), layout="constrained")
    ax = fig.add_subplot()
    for i, m in enumerate(columns):
        ys = [g + (i - (len(columns) - 1) / 2) * bar for g in range(len(groups))]
        widths = [math.nan if v is None else v for v in values[m]]
        ax.barh(ys, widths, height=bar * 0.92, color=colors.get(m, COLORS[i % len(COLORS)]), label=plain(m))
    ax.set_yticks(range(len(groups)), [plain(g) for g in groups])
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, max(present)))
    ax.set_title(title)
    ax.grid(True, axis="x", color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", fontsize=9, ncols=min(len(columns), 6), frameon=False)
    save_png(fig, path)
    return True


def pareto_plot(points: dict[str, tuple[float, float]], colors: dict[str, str], path: Path) -> None:
    """Helpfulness (y) against harmlessness (x = 1 - attack success rate), one point per model, the Pareto frontier
    drawn as stairs and its points filled; written to `path` (PNG)."""
    from matplotlib.figure import Figure

    front = pareto_front(points)

    fig = Figure(figsize=(6.6, 5.4), layout="constrained")
    ax = fig.add_subplot()
    ordered = sorted(((points[m], m) for m in front), key=lambda item: (item[0][0], -item[0][1]))
    (x0, y0), _ = ordered[0]
    stairs = [(0.0, y0), (x0, y0)]
    for (x, y), _ in ordered[1:]:
        stairs += [(stairs[-1][0], y), (x, y)]
    stairs.append((stairs[-1][0], 0.0))
    xs, ys = zip(*stairs)
    ax.fill_between(xs, ys, color="#2458a6", alpha=0.06, linewidth=0)
    ax.plot(xs, ys, color="#2458a6", linewidth=1.6, label="Pareto frontier", zorder=2)

    at: dict[tuple[float, float], list[str]] = {}
    for m, point in points.items():
        at.setdefault((round(point[0], 6), round(point[1], 6)), []).append(m)
    for m, (x, y) in points.items():
        on_front = m in front
        ax.scatter([x], [y], s=80, zorder=3, clip_on=False, color=colors[m] if on_front else "white",
                   edgecolors=colors[m], linewidths=2)
    for (x, y), names in at.items():
        ax.annotate(plain(", ".join(names)), (x, y), xytext=(7, 6), textcoords="offset points", fontsize=10,
                    ha="right" if x > 0.85 else "left", va="bottom" if y < 0.92 else "top")

    harm_help_axes(ax, "Helpfulness vs harmlessness")
    ax.set_axisbelow(True)
    ax.text(0.98, 0.02, "better: up and right", transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
            color="#5f6b7a")
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    save_png(fig, path)


def harm_help_axes(ax, title: str) -> None:
    """The axes of every helpfulness-against-harmlessness plot (the report's, `alignkit compare`'s): both 0 to 1."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("harmlessness = 1 − attack success rate")
    ax.set_ylabel("helpfulness = helpful accuracy")
    ax.set_title(title)
    ax.grid(True, color="#e3e6ea", linewidth=0.8)

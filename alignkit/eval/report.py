"""A self-contained HTML report of `alignkit eval`'s results (an `EvalResults`): tables, plots and side-by-side samples.

The page is meant to be opened straight from disk or attached to a ticket, so it has no external resources: inline
CSS, PNG plots next to it referenced by relative paths, and no JavaScript beyond a tiny load hook that records how
many images rendered (the browser test reads it). Every string that comes from the results (model names, prompts,
responses) is HTML-escaped, because responses are model output and may contain markup.

Plots are drawn with matplotlib's object-oriented API on the Agg canvas rather than through pyplot, so writing a
report neither switches the caller's global backend nor leaves figures alive in pyplot's registry.
"""

from __future__ import annotations

import html
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

from alignkit.eval.results import EvalResults, Sample, WinRate
from alignkit.utils.io import atomic_write_bytes, atomic_write_text

MISSING = "—"
# The breakdowns that get a bar plot besides their table: (breakdown key, file name, title, field of dict values).
BAR_PLOTS = (
    ("asr_by_category", "asr_by_category.png", "Attack success rate by category", None),
    ("jailbreak_asr_by_template", "jailbreak_by_template.png", "Jailbreak attack success rate by template", None),
    ("bias_by_dimension", "bias_by_dimension.png", "Stereotyped answer rate by bias dimension", "stereotyped"),
)
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


def write_report(results: EvalResults, out_dir: str | Path) -> Path:
    """Write `out_dir/report.html` and its PNG plots (each file atomically); return the HTML file's path.

    Works for any number of models, including none; missing or null metrics and breakdowns show as "—" or are left
    out, so a partial run (a suite part skipped, no judge configured) still gets a complete page.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models = results.names
    colors = {name: COLORS[i % len(COLORS)] for i, name in enumerate(models)}
    breakdowns = results.breakdowns

    # (anchor, title, body HTML); the header links to each.
    sections = [("metrics", "Metrics", _metrics_table(results, models))]
    if results.pipeline:
        sections += _part_sections(results, models)
    plots = []
    pareto = _pareto_plot(results, models, colors, out_dir)
    if pareto:
        plots.append(pareto)
    for key, file_name, title, field in BAR_PLOTS:
        if breakdowns.get(key):
            if _bar_plot(breakdowns[key], models, colors, title, field, out_dir / file_name):
                plots.append(_figure(file_name, title, ""))
    if plots:
        sections.append(("plots", "Plots", "\n".join(plots)))
    if breakdowns:
        tables = "\n".join(_breakdown_table(key, value, models, results) for key, value in breakdowns.items())
        sections.append(("breakdowns", "Breakdowns", tables))
    if results.win_rates:
        sections.append(("win-rates", "Win rates", _win_rates_table(results.win_rates)))
    if results.samples:
        sections.append(("samples", "Sample responses", _samples(results.samples, models, results)))

    path = out_dir / "report.html"
    body = [_header(results, sections)] + [_section(*section) for section in sections]
    atomic_write_text(path, _page(results, body))
    return path


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any) -> float | None:
    """A finite float, or None for null, non-numbers and NaN/inf (which json.dump writes for failed metrics)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    number = _number(value)
    if number is None:
        return MISSING
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    if abs(number) >= 10:
        return f"{number:.2f}"
    return f"{number:.3f}"


def _duration(seconds: Any) -> str:
    seconds = _number(seconds)
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _date(created: Any) -> str:
    if not created:
        return MISSING
    try:
        moment = datetime.fromisoformat(str(created))
    except ValueError:
        return str(created)
    zone = " UTC" if moment.utcoffset() is not None and not moment.utcoffset() else ""
    return moment.strftime("%Y-%m-%d %H:%M") + zone


def _best(values: dict[str, float | None], better: str | None) -> set[str]:
    """Models holding the best value of a row; none when the direction is unknown, fewer than two models have a
    value, or all values are equal (highlighting every cell says nothing)."""
    present = {name: v for name, v in values.items() if v is not None}
    if better not in ("lower", "higher") or len(present) < 2 or len(set(present.values())) == 1:
        return set()
    target = min(present.values()) if better == "lower" else max(present.values())
    return {name for name, v in present.items() if v == target}


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

CSS = """
:root { --fg: #1d2330; --muted: #5f6b7a; --line: #d9dee5; --soft: #f4f6f9; --best: #dff3e4; --accent: #2458a6; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 28px 32px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 12px; padding-bottom: 6px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 24px 0 8px; }
p { margin: 6px 0; }
a { color: var(--accent); }
.muted { color: var(--muted); }
.small { font-size: 13px; }
nav { margin: 10px 0 4px; font-size: 14px; }
nav a { margin-right: 14px; }
.meta { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 16px; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; background: var(--soft); }
.card h3 { margin-top: 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: 14px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.note { margin-top: 14px; padding: 10px 14px; border-left: 4px solid var(--accent); background: #eef3fb;
        font-size: 14px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 14px; margin: 4px 0 8px; }
th, td { border: 1px solid var(--line); padding: 6px 10px; vertical-align: top; }
thead th { background: var(--soft); text-align: center; }
tbody th { text-align: left; font-weight: 600; }
tbody tr:nth-child(even) td, tbody tr:nth-child(even) th { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; min-width: 84px; }
td.best, tbody tr:nth-child(even) td.best { background: var(--best); font-weight: 700; }
.hint { display: block; font-weight: 400; font-size: 12px; color: var(--muted); }
figure { margin: 18px 0 26px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 6px; }
.sample { border: 1px solid var(--line); border-radius: 8px; margin: 14px 0 22px; overflow: hidden; }
.sample-head { background: var(--soft); padding: 8px 14px; font-size: 13px; border-bottom: 1px solid var(--line); }
.prompt { padding: 10px 14px; border-bottom: 1px solid var(--line); }
.responses { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); }
.response { padding: 10px 14px; border-right: 1px solid var(--line); min-width: 0; }
.response:last-child { border-right: none; }
.response h4 { margin: 0 0 6px; font-size: 14px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; font: 13px/1.45 ui-monospace, "DejaVu Sans Mono",
      monospace; max-height: 320px; overflow-y: auto; }
.role { color: var(--muted); font-weight: 700; }
.verdict { display: inline-block; margin-left: 8px; padding: 0 8px; border-radius: 10px; font-size: 12px;
           font-weight: 600; background: #e6e9ef; color: #333; }
"""

# Test hook only: lets a headless browser report whether every plot actually decoded.
SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images;
  var loaded = 0;
  for (var i = 0; i < images.length; i++) { if (images[i].naturalWidth > 0) { loaded++; } }
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.imagesTotal = String(images.length);
});
"""


def _page(results: EvalResults, body: list[str]) -> str:
    title = f"alignkit eval — {results.suite or 'suite'} / {results.split or 'split'}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(title)}</title>\n<style>{CSS}</style>\n<script>{SCRIPT}</script>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_esc(title)}</h2>\n{body}\n</section>'


def _dl(pairs: list[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in pairs)
    return f"<dl>{items}</dl>"


def _header(results: EvalResults, sections: list[tuple[str, str, str]]) -> str:
    """Run facts, settings, models and who scored what, with links to the `sections` that follow."""
    setting_pairs = [(k, "none" if v is None else json.dumps(v) if isinstance(v, (dict, list)) else v)
                     for k, v in results.settings.items()]
    run = [("suite", results.suite or MISSING), ("split", results.split or MISSING),
           ("created", _date(results.created)), ("alignkit", results.alignkit_version or MISSING)]
    rows = "".join(
        f"<tr><th>{_esc(m.name)}</th><td>{_esc(m.spec or MISSING)}</td>"
        f"<td class=\"num\">{_esc(_duration(m.seconds))}</td></tr>"
        for m in results.models
    )
    models = (f'<table><thead><tr><th>model</th><th>spec</th><th>eval time</th></tr></thead><tbody>{rows}</tbody>'
              "</table>" if rows else '<p class="muted">No models.</p>')
    nav = [f'<a href="#{anchor}">{_esc(title)}</a>' for anchor, title, _ in sections]
    return (
        f"<header>\n<h1>Evaluation report: {_esc(results.suite or MISSING)}"
        f" <span class=\"muted\">/ {_esc(results.split or MISSING)}</span></h1>\n"
        f"<p class=\"muted\">{_esc(_date(results.created))}</p>\n<nav>{''.join(nav)}</nav>\n"
        f'<div class="meta">\n<div class="card"><h3>Run</h3>{_dl(run)}</div>\n'
        f'<div class="card"><h3>Settings</h3>{_dl(setting_pairs)}</div>\n'
        f'<div class="card"><h3>Models</h3>{models}</div>\n</div>\n'
        f'<p class="note">{_scorer_note(results)}</p>\n</header>'
    )


def _scorer_note(results: EvalResults) -> str:
    settings = results.settings
    groups: dict[str, list[str]] = {"rules": [], "judge": [], "reference": []}
    for key in results.metric_keys:
        groups[results.info(key).scorer].append(_esc(results.label(key)))
    parts = []
    if groups["rules"]:
        parts.append("<b>Scored by rules</b> (refusal and compliance patterns, exact or multiple-choice answers): " + ", ".join(groups["rules"]))
    if groups["judge"]:
        judge = settings.get("judge")
        who = f"the judge ({_esc(judge)})" if judge else "a judge, but none was configured, so they show " + MISSING
        parts.append(f"<b>Scored by {who}</b>: " + ", ".join(groups["judge"]))
    if groups["reference"]:
        reference = settings.get("reference")
        against = f" ({_esc(reference)})" if reference else ""
        parts.append(f"<b>Measured against the reference model{against}</b>: " + ", ".join(groups["reference"]))
    return ". ".join(parts) + "." if parts else "No metrics."


def _metrics_table(results: EvalResults, models: list[str]) -> str:
    head = "".join(f'<th data-model="{_esc(m)}">{_esc(m)}</th>' for m in models)
    rows = []
    for key in results.metric_keys:
        meta = results.info(key)
        values = {m: results.value(m, key) for m in models}
        best = _best(values, meta.better)
        hints = []
        if meta.better in ("lower", "higher"):
            hints.append(f"{meta.better} is better")
        if meta.n is not None:
            hints.append(f"n = {meta.n}")
        hint = f'<span class="hint">{_esc(" · ".join(hints))}</span>' if hints else ""
        cells = "".join(
            f'<td class="num{" best" if m in best else ""}" data-model="{_esc(m)}">{_fmt(values[m])}</td>'
            for m in models
        )
        rows.append(f'<tr data-metric="{_esc(key)}"><th scope="row">{_esc(results.label(key))}{hint}</th>{cells}</tr>')
    legend = ('<p class="small muted">Best value per row highlighted; ' + MISSING + " = not measured.</p>"
              if len(models) >= 2 else f'<p class="small muted">{MISSING} = not measured.</p>')
    table = (f'<div class="scroll"><table id="metrics-table"><thead><tr><th>metric</th>{head}</tr></thead>'
             f"<tbody>{''.join(rows)}</tbody></table></div>")
    return table + legend


def _breakdown_title(key: str, results: EvalResults) -> str:
    """A breakdown's heading, reusing its metric's label when there is one: asr_by_category -> Attack success rate
    by category."""
    metric, sep, group = key.partition("_by_")
    if sep and metric in results.metric_info:
        return f"{results.label(metric)} by {group.replace('_', ' ')}"
    return key.replace("_", " ").capitalize()


def _breakdown_table(key: str, breakdown: dict, models: list[str], results: EvalResults) -> str:
    """Rows = groups, columns = models, or models x fields when the values are dicts of fields."""
    columns = list(dict.fromkeys(models + [str(m) for m in breakdown]))
    per_model = {m: breakdown.get(m) or {} for m in columns}
    groups = list(dict.fromkeys(g for values in per_model.values() for g in values))
    fields = list(dict.fromkeys(f for values in per_model.values() for v in values.values() if isinstance(v, dict)
                                for f in v))
    title = f'<h3 id="breakdown-{_esc(key)}">{_esc(_breakdown_title(key, results))}</h3>'
    if not groups:
        return title + '<p class="muted">No data.</p>'
    if fields:
        head = ("<tr><th rowspan=\"2\">group</th>"
                + "".join(f'<th colspan="{len(fields)}">{_esc(m)}</th>' for m in columns) + "</tr><tr>"
                + "".join(f"<th>{_esc(f)}</th>" for _ in columns for f in fields) + "</tr>")
    else:
        head = "<tr><th>group</th>" + "".join(f"<th>{_esc(m)}</th>" for m in columns) + "</tr>"
    rows = []
    for group in groups:
        cells = []
        for m in columns:
            value = per_model[m].get(group)
            if fields:
                cells += [f'<td class="num">{_fmt(value.get(f) if isinstance(value, dict) else None)}</td>'
                          for f in fields]
            else:
                cells.append(f'<td class="num">{_fmt(value)}</td>')
        rows.append(f"<tr><th>{_esc(group)}</th>{''.join(cells)}</tr>")
    return (f'{title}<div class="scroll"><table data-breakdown="{_esc(key)}"><thead>{head}</thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _win_rates_table(win_rates: tuple[WinRate, ...]) -> str:
    rows = "".join(
        f"<tr><th>{_esc(w.a)}</th><th>{_esc(w.b)}</th>"
        f"<td class=\"num\">{_fmt(w.win_rate)}</td><td class=\"num\">{_esc(MISSING if w.n is None else w.n)}</td></tr>"
        for w in win_rates
    )
    return ('<p class="small muted">How often model A\'s response was preferred over model B\'s '
            "on the same prompt.</p>"
            '<table id="win-rates-table"><thead><tr><th>model A</th><th>model B</th><th>A wins</th><th>n</th></tr>'
            f"</thead><tbody>{rows}</tbody></table>")


def _prompt_html(prompt: Any) -> str:
    """A prompt as text; a chat (list of {role, content}) as one "role: content" paragraph per message."""
    if isinstance(prompt, list):
        lines = []
        for message in prompt:
            if isinstance(message, dict):
                role = _esc(message.get("role", "?"))
                lines.append(f'<span class="role">{role}:</span> {_esc(message.get("content", ""))}')
            else:
                lines.append(_esc(message))
        return "<pre>" + "\n".join(lines) + "</pre>"
    if isinstance(prompt, dict):
        return f"<pre>{_esc(json.dumps(prompt, ensure_ascii=False, indent=2))}</pre>"
    return f"<pre>{_esc(MISSING if prompt is None else prompt)}</pre>"


def _samples(samples: tuple[Sample, ...], models: list[str], results: EvalResults) -> str:
    blocks = []
    for sample in samples:
        responses, verdicts = sample.responses, sample.verdicts
        columns = list(dict.fromkeys(models + [str(m) for m in responses]))
        cells = []
        for m in columns:
            verdict = verdicts.get(m)
            badge = f'<span class="verdict">{_esc(verdict)}</span>' if verdict is not None else ""
            response = responses.get(m)
            text = MISSING if response is None else response
            cells.append(f'<div class="response" data-model="{_esc(m)}"><h4>{_esc(m)}{badge}</h4>'
                         f"<pre>{_esc(text)}</pre></div>")
        head = (f"<b>{_esc(results.label(sample.metric) if sample.metric else 'sample')}</b>"
                f' <span class="muted">· {_esc(sample.id or "")}</span>')
        blocks.append(f'<div class="sample"><div class="sample-head">{head}</div>'
                      f'<div class="prompt">{_prompt_html(sample.prompt)}</div>'
                      f'<div class="responses">{"".join(cells)}</div></div>')
    return "\n".join(blocks)


def _figure(file_name: str, alt: str, caption: str) -> str:
    caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{_esc(file_name)}" alt="{_esc(alt)}">{caption_html}</figure>'


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def _plain(text: Any) -> str:
    """Text for a plot label: matplotlib reads a pair of "$" as mathtext (and fails on malformed math), so a model
    or group name with dollar signs is escaped to show them literally."""
    return str(text).replace("$", r"\$")


def _save(fig, path: Path) -> None:
    """Render on the Agg canvas and write the PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())


def _pareto_plot(results: EvalResults, models: list[str], colors: dict[str, str], out_dir: Path) -> str:
    """Helpfulness (helpful_accuracy) against harmlessness (1 - asr); returns the <figure> HTML, or "" without data."""
    from matplotlib.figure import Figure

    points, left_out = {}, []
    for m in models:
        asr, helpful = results.value(m, "asr"), results.value(m, "helpful_accuracy")
        if asr is None or helpful is None:
            left_out.append(m)
        else:
            points[m] = (1.0 - asr, helpful)
    if not points:
        return ""
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
        ax.annotate(_plain(", ".join(names)), (x, y), xytext=(7, 6), textcoords="offset points", fontsize=10,
                    ha="right" if x > 0.85 else "left", va="bottom" if y < 0.92 else "top")

    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("harmlessness = 1 − attack success rate")
    ax.set_ylabel("helpfulness = helpful accuracy")
    ax.set_title("Helpfulness vs harmlessness")
    ax.grid(True, color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.text(0.98, 0.02, "better: up and right", transform=ax.transAxes, ha="right", va="bottom", fontsize=9,
            color="#5f6b7a")
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    _save(fig, out_dir / "pareto.png")

    caption = "Filled points are on the Pareto frontier (no other model is at least as good on both axes)."
    if left_out:
        caption += " Not plotted (no attack success rate or helpful accuracy): " + ", ".join(map(_esc, left_out))
        caption += "."
    return _figure("pareto.png", "Helpfulness vs harmlessness", caption)


def _bar_plot(breakdown: dict, models: list[str], colors: dict[str, str], title: str, field: str | None,
              path: Path) -> bool:
    """Grouped horizontal bars (groups down the side, one bar per model), which keep long group names readable.
    Returns False, writing nothing, when no value is present."""
    from matplotlib.figure import Figure

    columns = [m for m in dict.fromkeys(models + [str(m) for m in breakdown]) if breakdown.get(m)]
    groups = list(dict.fromkeys(g for m in columns for g in breakdown[m]))

    def value(m: str, group: str) -> float | None:
        v = breakdown[m].get(group)
        return _number(v.get(field) if isinstance(v, dict) else None) if field else _number(v)

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
        ax.barh(ys, widths, height=bar * 0.92, color=colors.get(m, COLORS[i % len(COLORS)]), label=_plain(m))
    ax.set_yticks(range(len(groups)), [_plain(g) for g in groups])
    ax.invert_yaxis()
    ax.set_xlim(0, max(1.0, max(present)))
    ax.set_title(title)
    ax.grid(True, axis="x", color="#e3e6ea", linewidth=0.8)
    ax.set_axisbelow(True)
    fig.legend(loc="outside lower center", fontsize=9, ncols=min(len(columns), 6), frameon=False)
    _save(fig, path)
    return True


# ---------------------------------------------------------------------------------------------
# A pipeline's own part (results.pipeline["report"]): the sections a pipeline (e.g. `alignkit cai`) describes
# itself with, drawn here without knowing the pipeline
# ---------------------------------------------------------------------------------------------


def _rich(text: str) -> str:
    """Escaped text in which **...** is bold."""
    parts = _esc(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _cell(value: Any) -> tuple[str, bool]:
    """A part's cell as (HTML, numeric): {"number": x} and {"seconds": x} are formatted, None is missing."""
    if isinstance(value, dict) and "number" in value:
        return _fmt(_number(value["number"])), True
    if isinstance(value, dict) and "seconds" in value:
        return _esc(_duration(value["seconds"])), True
    return _esc(MISSING if value is None else value), False


def _part_table(table: dict) -> str:
    """A part's table: the first cell of each row heads it; `row_key` names a data attribute holding its `key`."""
    rows = []
    for row in table.get("rows") or []:
        cells = [_cell(v) for v in row.get("cells") or []]
        attribute = f' data-{_esc(table["row_key"])}="{_esc(row.get("key"))}"' if table.get("row_key") else ""
        rest = "".join(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>" for text, numeric in cells[1:])
        rows.append(f"<tr{attribute}><th>{cells[0][0] if cells else ''}</th>{rest}</tr>")
    head = "".join(f"<th>{_esc(h)}</th>" for h in table.get("head") or [])
    return (f'<div class="scroll"><table id="{_esc(table.get("id") or "")}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _part_sections(results: EvalResults, models: list[str]) -> list[tuple[str, str, str]]:
    """The pipeline's sections: each with text, facts (a list of [name, value]), a table, or `effects` (each model's
    metrics with the change from the model before it: left out with fewer than two models)."""
    sections = []
    for section in (results.pipeline.get("report") or {}).get("sections") or []:
        body = []
        if section.get("text"):
            body.append(f"<p>{_rich(section['text'])}</p>")
        if section.get("facts"):
            items = "".join(f"<dt>{_esc(k)}</dt><dd>{_cell(v)[0]}</dd>" for k, v in section["facts"])
            body.append(f"<dl>{items}</dl>")
        if section.get("table"):
            body.append(_part_table(section["table"]))
        if section.get("effects"):
            if len(models) < 2:
                continue
            body.append(_effects_table(results, models))
        sections.append((str(section.get("anchor")), str(section.get("title")), "".join(body)))
    return sections


def _effects_table(results: EvalResults, models: list[str]) -> str:
    """Each model's metrics with the change from the model before it (base -> SL-CAI -> RL-CAI)."""
    head = "".join(f"<th>{_esc(m)}</th>" + (f"<th>change vs {_esc(models[i - 1])}</th>" if i else "")
                   for i, m in enumerate(models))
    rows = []
    for key in results.metric_keys:
        values = [results.value(m, key) for m in models]
        if all(v is None for v in values):
            continue
        cells = []
        for i, v in enumerate(values):
            cells.append(f'<td class="num">{_fmt(v)}</td>')
            if i:
                before = values[i - 1]
                delta = None if v is None or before is None else v - before
                cells.append(f'<td class="num">{MISSING if delta is None else f"{delta:+.3f}"}</td>')
        rows.append(f'<tr data-metric="{_esc(key)}"><th scope="row">{_esc(results.label(key))}</th>{"".join(cells)}</tr>')
    return (f'<div class="scroll"><table id="effects-table"><thead><tr><th>metric</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


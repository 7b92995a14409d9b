"""A self-contained HTML report of `alignkit eval`'s results (an `EvalResults`): tables, plots and side-by-side samples.

The page is meant to be opened straight from disk or attached to a ticket, so it has no external resources: inline
CSS, PNG plots next to it referenced by relative paths, and no JavaScript beyond a tiny load hook that records how
many images rendered (the browser test reads it). Every string that comes from the results (model names, prompts,
responses) is HTML-escaped, because responses are model output and may contain markup.

The plots are drawn by `plots.py`.
"""

from __future__ import annotations

import html
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from alignkit.eval.plots import COLORS, bar_plot, finite, pareto_front, pareto_plot
from alignkit.eval.report_style import CSS, SCRIPT
from alignkit.eval.results import EvalResults, Sample, WinRate
from alignkit.utils.io import atomic_write_text

__all__ = ["COLORS", "pareto_front", "write_report"]

MISSING = "—"
# The breakdowns that get a bar plot besides their table: (breakdown key, file name, title, field of dict values).
BAR_PLOTS = (
    ("asr_by_category", "asr_by_category.png", "Attack success rate by category", None),
    ("jailbreak_asr_by_template", "jailbreak_by_template.png", "Jailbreak attack success rate by template", None),
    ("bias_by_dimension", "bias_by_dimension.png", "Stereotyped answer rate by bias dimension", "stereotyped"),
)
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
    pareto = _pareto_figure(results, models, colors, out_dir)
    if pareto:
        plots.append(pareto)
    for key, file_name, title, field in BAR_PLOTS:
        if breakdowns.get(key):
            if bar_plot(breakdowns[key], models, colors, title, field, out_dir / file_name):
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


def _fmt(value: Any) -> str:
    number = finite(value)
    if number is None:
        return MISSING
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    if abs(number) >= 10:
        return f"{number:.2f}"
    return f"{number:.3f}"


def _duration(seconds: Any) -> str:
    seconds = finite(seconds)
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


def _pareto_figure(results: EvalResults, models: list[str], colors: dict[str, str], out_dir: Path) -> str:
    """The helpfulness-harmlessness plot's <figure> HTML, or "" when no model has both figures."""
    points, left_out = {}, []
    for m in models:
        asr, helpful = results.value(m, "asr"), results.value(m, "helpful_accuracy")
        if asr is None or helpful is None:
            left_out.append(m)
        else:
            points[m] = (1.0 - asr, helpful)
    if not points:
        return ""
    pareto_plot(points, colors, out_dir / "pareto.png")
    caption = "Filled points are on the Pareto frontier (no other model is at least as good on both axes)."
    if left_out:
        caption += " Not plotted (no attack success rate or helpful accuracy): " + ", ".join(map(_esc, left_out))
        caption += "."
    return _figure("pareto.png", "Helpfulness vs harmlessness", caption)


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
        return _fmt(finite(value["number"])), True
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


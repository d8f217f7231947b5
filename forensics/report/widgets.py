"""The report notebook's display: escaped HTML tables, text and lists, the impact tiles,
the root-cause card, and the hand-over of the report content to :mod:`forensics.report.runner`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

import pandas as pd

from forensics import units
from forensics.report.rca import EXPORT_MIMETYPE, MAX_TABLE_ROWS, RcaReport, as_number, fmt_int, fmt_time

# --------------------------------------------------------------------------- notebook display

def html_table(df: pd.DataFrame, max_rows: int | None = MAX_TABLE_ROWS, caption: str = "") -> Any:
    """``df`` as an escaped HTML table (IPython HTML object): timestamps in UTC, missing as
    "—", a severity column coloured, at most ``max_rows`` rows (None: all) with a note of how
    many more."""
    from IPython.display import HTML

    shown = df.head(max_rows).copy()
    if shown.empty:
        return HTML(f'<p class="report-note">{html.escape(f"{caption}: none" if caption else "none")}</p>')
    times = [c for c in shown.columns if isinstance(shown[c].dtype, pd.DatetimeTZDtype)]
    for c in times:
        shown[c] = shown[c].dt.strftime("%Y-%m-%d %H:%M:%S")
    styler = (shown.style.format(escape="html", na_rep="—", precision=2, thousands=",")
              .format_index(escape="html", axis=1).hide(axis="index"))
    classes = pd.DataFrame("", index=shown.index, columns=shown.columns)
    classes[times] = "ts"
    if "severity" in shown.columns:
        classes["severity"] = "sev-" + shown["severity"].astype(str)
    styler = styler.set_td_classes(classes)
    note = f"{caption} " if caption else ""
    if max_rows is not None and len(df) > max_rows:
        note += f"(showing {max_rows:,} of {len(df):,} rows)"
    styler = styler.set_caption(html.escape(note.strip())) if note.strip() else styler
    return HTML(styler.to_html())


def html_text(text: str, css: str = "") -> Any:
    """A paragraph of (untrusted) text, escaped."""
    from IPython.display import HTML

    return HTML(f'<p class="{css}">{html.escape(text)}</p>' if css else f"<p>{html.escape(text)}</p>")


def html_list(items: Iterable[str], empty: str = "none") -> Any:
    """Items of (untrusted) text as an escaped bullet list; ``empty`` when there are none."""
    from IPython.display import HTML

    items = list(items)
    if not items:
        return HTML(f'<p class="report-note">{html.escape(empty)}</p>')
    return HTML('<ul class="report-list">' + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")


def kpis(rca: RcaReport) -> Any:
    """Impact as a row of big numbers."""
    from IPython.display import HTML

    top = rca.top or {}
    imp = rca.impact
    tiles = []
    for key, label in (("messages_affected", "messages affected"), ("conversations_affected", "conversations"),
                       ("customers_affected", "customers"), ("channels_affected", "channels")):
        value = imp.get(key, top.get(key))
        if isinstance(value, list | tuple):
            value = ", ".join(map(str, value)) or "none"
        shown = fmt_int(value) if not isinstance(value, str) else value
        state = "good" if shown in ("0", "none") else "bad"
        tiles.append(f'<div class="report-kpi {state}"><div class="value">{html.escape(shown)}</div>'
                     f'<div class="label">{html.escape(label)}</div></div>')
    breach = rca.sla_breach()
    if breach is not None:
        sla = rca.review.sla
        tiles.append(f'<div class="report-kpi {"bad" if breach else "good"}"><div class="value">'
                     f'{"breached" if breach else "met"}</div><div class="label">delivery SLA: '
                     f'{html.escape(units.percent(sla["met_share"]))} within {units.number(sla["within_s"])} s '
                     f'(target {units.percent(sla["target_share"])})</div></div>')
    return HTML('<div class="report-kpis">' + "".join(tiles) + "</div>")


def summary_card(rca: RcaReport) -> Any:
    """The plain summary as a list of headed sentences, the window note under it when the
    window was clamped, the delivery SLA's statement last."""
    from IPython.display import HTML

    e = html.escape
    level = rca.review.confidence.get("level", "low")
    def sentence_html(head: str, sentence: str) -> str:
        if head != "How sure" or ":" not in sentence:
            return e(sentence)
        word, rest = sentence.split(":", 1)
        return f'<span class="report-confidence-{e(level)}">{e(word)}</span>:{e(rest)}'

    rows = "".join(f"<dt>{e(head)}</dt><dd>{sentence_html(head, sentence)}</dd>"
                   for head, sentence in rca.summary_sentences())
    note = rca.window_note()
    return HTML(f'<dl class="report-summary">{rows}</dl>'
                + (f'<p class="report-window-note"><b>Window.</b> {e(note)}</p>' if note else "")
                + f'<p class="report-note">{e(rca.text(rca.review.sla["statement"]))}</p>')


def root_cause_card(rca: RcaReport) -> Any:
    from IPython.display import HTML

    hs = rca.hypothesis_dicts()
    if not hs:
        return HTML('<p class="report-note">No hypothesis fits the evidence.</p>')
    h = hs[0]
    e = html.escape

    def items(values: list[str]) -> str:
        return "<ul class=\"report-list\">" + "".join(f"<li>{e(v)}</li>" for v in values) + "</ul>" if values \
            else '<p class="report-note">none recorded</p>'

    return HTML(
        f'<div class="report-callout"><h3>{e(str(h["title"]))} '
        f'<span class="report-note">({e(str(h["cause"]))}, confidence {units.percent(h["confidence"])}, '
        f'{units.percent(as_number(h.get("margin")) or 0)} ahead of the next)</span></h3>'
        f"<p>First seen {e(fmt_time(h.get('first_seen')))}{e(_radius(h))}.</p>"
        + (f'<p class="report-note">{e(rca.close_call_text())}</p>' if rca.close_call_text() else "")
        +
        f"<h3>Evidence for</h3>{items(h['evidence_for'])}<h3>Evidence against</h3>{items(h['evidence_against'])}"
        + (f"<p><b>Where:</b> {e('; '.join(h['where']))}</p>" if h["where"] else "") +
        f"<p><b>Runbook step:</b> {e(str(h.get('runbook_step') or 'none'))}<br>"
        f"<b>Recommended action:</b> {e(str(h.get('recommended_action') or 'none'))}</p></div>")


def _radius(h: dict) -> str:
    """The hypothesis' own blast radius, when the ranking could attribute messages to it."""
    if not as_number(h.get("messages_affected")):
        return ""
    return (f"; {fmt_int(h['messages_affected'])} messages in {fmt_int(h.get('conversations_affected'))} "
            f"conversations, {fmt_int(h.get('customers_affected'))} customers")


def other_hypotheses(rca: RcaReport) -> pd.DataFrame:
    hs = rca.hypothesis_dicts()[1:]
    rows = [{"rank": h["rank"], "cause": h["title"], "confidence": units.percent(h["confidence"]),
             "evidence for": "; ".join(h["evidence_for"][:3]), "evidence against": "; ".join(h["evidence_against"][:3]),
             "where": "; ".join(h["where"]), "runbook step": h.get("runbook_step")} for h in hs]
    return pd.DataFrame(rows, columns=["rank", "cause", "confidence", "evidence for", "evidence against", "where",
                                       "runbook step"])


def scenario_section(rca: RcaReport) -> Any:
    """The scenario truth section, only for a simulated bundle (None otherwise: no output)."""
    from IPython.display import HTML

    truth = rca.scenario_truth()
    if truth is None:
        return None
    rows = pd.DataFrame([{"field": k.replace("_", " "), "value": "" if v is None else str(v)}
                         for k, v in truth.items()])
    return HTML("<h2>Scenario truth</h2><p>This incident was simulated; the simulator knows its true cause, "
                "so the ranking can be checked.</p>" + html_table(rows).data)


def window_figures_section(rca: RcaReport) -> Any:
    """The whole-window figures computed on the server, with where they were computed; only
    for a live window above the push-down threshold (None otherwise: no output)."""
    from IPython.display import HTML

    figures = rca.on_server
    if figures is None:
        return None
    counts = figures.status_counts.pivot_table(index="bucket_start", columns="status", values="count",
                                               aggfunc="sum", fill_value=0).reset_index()
    counts.columns.name = None
    return HTML("<h2>Whole-window figures, computed on the server</h2>"
                f"<p>{html.escape(figures.note())}</p>"
                + html_table(rca.frame(figures.stuck), caption="Stuck messages per status and channel").data
                + html_table(rca.frame(figures.failed_by_error), caption="FAILED messages by error").data
                + html_table(counts, max_rows=None,
                             caption=f"Messages created per {figures.bucket} by current status").data
                + html_table(rca.frame(figures.examples), max_rows=None,
                             caption="The messages stuck longest (fetched on demand)").data)


def publish(rca: RcaReport) -> None:
    """Hand what the report says to build_report (an output of EXPORT_MIMETYPE)."""
    from IPython.display import display

    display({EXPORT_MIMETYPE: rca.to_dict(), "text/plain": "RCA report content (for report.md, summary.json)"},
            raw=True)


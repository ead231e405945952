"""A journey's funnel as a self-contained HTML page: per step, bars for sent, delivered, opened,
clicked and converted customers (inline SVG, no script, no plotting dependency)."""
from __future__ import annotations

import html
from typing import Any

STAGES = (("sent", "#4c6ef5"), ("delivered", "#15aabf"), ("opened", "#40c057"), ("clicked", "#fab005"),
          ("converted", "#e8590c"))


def _svg(step: dict[str, Any], width: int = 560) -> str:
    m = step["metrics"]
    top = max(m["sent"]["customers"], 1)
    bar_h, gap, label_w = 22, 8, 90
    rows = []
    for i, (stage, color) in enumerate(STAGES):
        n = m[stage]["customers"]
        w = int((width - label_w - 80) * n / top)
        y = i * (bar_h + gap)
        pct = f"{100 * n / top:.1f}%" if m["sent"]["customers"] else "–"
        rows.append(
            f'<text x="0" y="{y + 16}" font-size="13">{stage}</text>'
            f'<rect x="{label_w}" y="{y}" width="{max(w, 1)}" height="{bar_h}" fill="{color}" rx="3">'
            f"<title>{stage}: {n} customers</title></rect>"
            f'<text x="{label_w + max(w, 1) + 6}" y="{y + 16}" font-size="12">{n} ({pct})</text>'
        )
    h = len(STAGES) * (bar_h + gap)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img" '
            f'aria-label="funnel of step {html.escape(str(step["step_id"]))}" font-family="system-ui,sans-serif">'
            + "".join(rows) + "</svg>")


def funnel_html(metrics: dict[str, Any]) -> str:
    jid = html.escape(str(metrics["journey_id"]))
    goal = metrics.get("goal")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Funnel of {jid}</title>",
             "<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#222}section{margin-bottom:2rem}"
             "h2{font-size:1.05rem;margin:.2rem 0}.sub{color:#666;font-size:.85rem}</style></head><body>",
             f"<h1>Journey {jid}</h1>"]
    t = metrics["totals"]["metrics"]
    summary = (f"{t['sent']['customers']} customers sent, {t['opened']['customers']} opened, "
               f"{t['clicked']['customers']} clicked")
    if goal:
        summary += f", {t['converted']['customers']} converted ({html.escape(goal['event'])} within " \
                   f"{goal['within_seconds'] // 3600} h)"
        c = metrics["control"]
        if c["customers"]:
            lift = metrics.get("lift")
            summary += (f"; control group {c['customers']} customers, {c['converted']} converted"
                        + (f"; lift {lift * 100:+.1f}%" if lift is not None else ""))
    parts.append(f"<p class='sub'>{summary}</p>")
    if not metrics["steps"]:
        parts.append("<p>No messages yet.</p>")
    for step in metrics["steps"]:
        sid = html.escape(str(step["step_id"]))
        rates = step["rates"]
        sub = ", ".join(f"{k.replace('_', ' ')} {v * 100:.1f}%" for k, v in rates.items() if v is not None)
        parts.append(f"<section><h2>Step {sid}</h2><div class='sub'>{html.escape(sub)}</div>{_svg(step)}</section>")
    parts.append("</body></html>")
    return "".join(parts)

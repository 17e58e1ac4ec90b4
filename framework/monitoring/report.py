"""The monitoring report: one self-contained HTML page (inline SVG and CSS, no script or font from
any network: it opens offline), per run or per ``python -m framework monitor`` call.

Panels, per model version where it applies:

* **drift per feature over time**: each tested column's effect (KS D / TVD) window by window,
  drifted windows marked, from the monitors' ``MonitorReport.timeline`` (panel ``drift``);
* **accuracy**: true (from feedback labels) and estimated before labels, per version and
  window (panel ``accuracy``);
* **latency percentiles** (p50 / p95 / p99) and **traffic split** (rows per model version and
  arm) per window, computed here from the served rows;
* the **drift table** of the newest window per version, and every **alert / action** taken.

A timeline point is ``{"panel", "series", "window" (its start, ISO), "value", "flag"?}``.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable, Sequence

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
#: series drawn per panel at most (the largest effects first); the table lists everything
MAX_SERIES = 10
WIDTH, HEIGHT, PAD = 720, 260, 44


def served_timeline(frame: Any, windows: int = 12) -> list[dict]:
    """Latency percentiles and the traffic split per window of served time (equal slices)."""
    import numpy as np
    import pandas as pd

    if frame is None or not len(frame) or "timestamp" not in frame.columns:
        return []
    times = pd.to_datetime(frame["timestamp"], utc=True)
    span = (times.max() - times.min()).total_seconds()
    n = max(1, min(windows, len(frame) // 20 or 1)) if span > 0 else 1
    edges = times.min() + pd.to_timedelta(np.linspace(0, span, n + 1), unit="s")
    index = np.clip(np.searchsorted(edges.to_numpy(), times.to_numpy(), side="right") - 1, 0, n - 1)
    out: list[dict] = []
    for w in range(n):
        part = frame[index == w]
        if not len(part):
            continue
        start = edges[w].isoformat()
        latency = pd.to_numeric(part.get("latency_ms"), errors="coerce").dropna() if "latency_ms" in part else []
        for q in (50, 95, 99):
            if len(latency):
                out.append({"panel": "latency", "series": f"p{q} ms", "window": start,
                            "value": float(np.percentile(latency, q))})
        keys = part["model_version"].astype(str) + " / " + part["arm"].astype(str) if "arm" in part else part["model_version"].astype(str)
        for key, count in keys.value_counts().items():
            out.append({"panel": "traffic", "series": str(key), "window": start, "value": float(count) / len(part)})
    return out


def _svg_chart(points: Sequence[dict], y_label: str, y_max: float | None = None) -> str:
    """A line chart of series over windows, as inline SVG."""
    windows = sorted({p["window"] for p in points})
    series: dict[str, list[dict]] = {}
    for p in points:
        series.setdefault(p["series"], []).append(p)
    if len(series) > MAX_SERIES:  # the series that moved most
        keep = sorted(series, key=lambda s: -max((p["value"] or 0.0) for p in series[s]))[:MAX_SERIES]
        series = {s: series[s] for s in keep}
    values = [p["value"] for s in series.values() for p in s if p["value"] is not None and not math.isnan(p["value"])]
    top = y_max if y_max is not None else (max(values) * 1.1 if values else 1.0) or 1.0
    x_of = {w: PAD + (WIDTH - 2 * PAD) * (i / max(1, len(windows) - 1) if len(windows) > 1 else 0.5)
            for i, w in enumerate(windows)}

    def y_of(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v / top)

    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 18 * ((len(series) + 1) // 2)}" '
             f'role="img" aria-label="{html.escape(y_label)}">',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
             f'<text x="4" y="{PAD - 12}" font-size="11">{html.escape(y_label)}</text>']
    for frac in (0.0, 0.5, 1.0):
        y = y_of(top * frac)
        parts.append(f'<text x="4" y="{y + 4:.1f}" font-size="10">{top * frac:.3g}</text>')
    step = max(1, len(windows) // 6)
    same_day = len({str(w)[:10] for w in windows}) == 1
    for i, w in enumerate(windows):
        if i % step == 0:
            text = str(w)[11:19] if same_day and len(str(w)) >= 19 else str(w)[:16]
            parts.append(f'<text x="{x_of[w]:.1f}" y="{HEIGHT - PAD + 14}" font-size="9" text-anchor="middle">'
                         f'{html.escape(text)}</text>')
    for k, (name, pts) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        pts = sorted((p for p in pts if p["value"] is not None and not math.isnan(p["value"])), key=lambda p: p["window"])
        coords = " ".join(f"{x_of[p['window']]:.1f},{y_of(p['value']):.1f}" for p in pts)
        if len(pts) > 1:
            parts.append(f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        for p in pts:
            r = 5 if p.get("flag") else 3
            stroke = ' stroke="#000" stroke-width="1.5"' if p.get("flag") else ""
            parts.append(f'<circle class="point{" flagged" if p.get("flag") else ""}" cx="{x_of[p["window"]]:.1f}" '
                         f'cy="{y_of(p["value"]):.1f}" r="{r}" fill="{colour}"{stroke}>'
                         f'<title>{html.escape(name)} {html.escape(str(p["window"]))}: {p["value"]:.4g}</title></circle>')
        lx, ly = PAD + 320 * (k % 2), HEIGHT + 4 + 18 * (k // 2)
        parts.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{ly + 9}" font-size="11">{html.escape(name[:50])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_fmt, value))
    return str(value)


PANELS = (("drift", "Drift per feature over time (KS D / TVD per window; ringed: drifted)", "KS D / TVD", None),
          ("accuracy", "Accuracy per model version: true (labels) and estimated before labels", "accuracy", 1.0),
          ("latency", "Latency percentiles per window (ms)", "latency ms", None),
          ("traffic", "Traffic split: share of served rows per model version / arm", "share of rows", 1.0))

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
.alert{color:#a00}.ok{color:#070}.meta{color:#666;font-size:12px}svg.chart{display:block;margin:8px 0}"""


def render(title: str, reports: Sequence[Any], frame: Any = None, meta: dict | None = None,
           actions: Sequence[dict] | None = None) -> str:
    """The page: ``reports`` are MonitorReports (or their dicts), ``frame`` the served rows,
    ``actions`` the events of the recipe's actions on the alerts (``stages/act.py``)."""
    def get(report: Any, key: str, default: Any) -> Any:
        return report.get(key, default) if isinstance(report, dict) else getattr(report, key, default)

    timeline = [p for r in reports for p in get(r, "timeline", []) or []] + served_timeline(frame)
    alerts = [(get(r, "monitor", "?"), a) for r in reports for a in get(r, "alerts", []) or []]
    out = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    if meta:
        out.append('<p class="meta">' + " &middot; ".join(f"{html.escape(str(k))}: {html.escape(_fmt(v))}"
                                                         for k, v in meta.items()) + "</p>")
    out.append("<h2>Alerts and actions</h2>")
    if alerts:
        out.append("<ul>" + "".join(f'<li class="alert"><b>{html.escape(m)}</b>: {html.escape(a)}</li>' for m, a in alerts)
                   + "</ul>")
    else:
        out.append('<p class="ok">No alert: nothing drifted beyond the declared false-alarm rate, no accuracy drop.</p>')
    if actions:
        def detail(e: dict) -> str:
            result = e.get("result") or {}
            return e.get("error") or e.get("note") or ", ".join(
                f"{k}: {_fmt(v)}" for k, v in result.items() if not isinstance(v, dict))[:300]

        out.append('<div data-panel="actions">' + _table(
            [(e.get("action"), e.get("status"), e.get("alert_kind"), e.get("time"), detail(e)) for e in actions],
            ("action", "status", "on alert", "time", "details")) + "</div>")
    for panel, heading, y_label, y_max in PANELS:
        points = [p for p in timeline if p.get("panel") == panel]
        if not points:
            continue
        out.append(f'<h2>{html.escape(heading)}</h2><div class="panel" data-panel="{panel}">')
        groups = sorted({p.get("group", "") for p in points})
        for group in groups:
            if group:
                out.append(f"<h3>{html.escape(group)}</h3>")
            out.append(_svg_chart([p for p in points if p.get("group", "") == group], y_label, y_max))
        out.append("</div>")
    for r in reports:
        windows = (get(r, "metrics", {}) or {}).get("drift_by_window") or []
        if windows:
            out.append(f"<h2>Drift table: {html.escape(get(r, 'monitor', '?'))}</h2>")
            out.append(_table([(w["model_version"], w["start"], w["end"], w["rows"], w["tests"], w["drifted"] or "none")
                               for w in windows], ("model version", "from", "to", "rows", "tests", "drifted")))
        metrics = {k: v for k, v in (get(r, "metrics", {}) or {}).items() if k != "drift_by_window"}
        out.append(f"<h2>Metrics: {html.escape(get(r, 'monitor', '?'))}</h2>")
        out.append(_table(sorted(metrics.items()), ("metric", "value")))
    out.append("</body></html>")
    return "".join(out)

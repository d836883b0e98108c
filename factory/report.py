"""The run report: one self-contained HTML page beside the run's summary.json.

    render_report(summary, copies, products, progress)  -> HTML text (pure)
    write_report(run_dir, ...)                          -> writes report.html

What it shows: the run's key figures; the status mix per channel; the
rejection reasons (after and before repair); the copy length distribution per
channel against the channel's limit; throughput over time (from the summary's
``progress`` samples); and a table of sample copies per channel beside the
product facts they were written from.

Self-contained and inert: inline CSS and inline SVG drawn here in Python, no
script, no external URL. A Content-Security-Policy forbids scripts and every
fetch, so even a mistake in escaping could not run anything or call out.
Every piece of copy (LLM output) and product data (untrusted input) is
HTML-escaped. No user data appears: no user ids, no profile fields.

``copies`` needs the columns in ``REPORT_COLUMNS`` (extra columns are
ignored); it may be a sample of the run's rows: the length charts say how
many rows they measured. The status and reason charts come from the summary,
which counts every row.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.storage import Location, put_bytes

REPORT = "report.html"
# What render_report reads from the copies (read only these from the files).
REPORT_COLUMNS = (
    C.ROW_ID,
    C.CHANNEL,
    C.LOCALE,
    C.STATUS,
    C.REASONS,
    C.TEXT,
    C.COPY_LENGTH,
    C.COPY_LENGTH_LIMIT,
    C.PRODUCT_ID,
)
SAMPLES_PER_CHANNEL = 6
# Untrusted text is cut for display: the page stays readable and small.
MAX_COPY_CHARS = 600
MAX_FACT_CHARS = 160
MAX_ATTRIBUTES = 4
HISTOGRAM_BINS = 20

STATUS_COLORS = {C.ACCEPTED: "#2e7d32", C.REVIEW: "#f9a825", C.REJECTED: "#c62828"}
PHASE_COLORS = ("#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#4e342e")
WITHIN_COLOR, OVER_COLOR, BEFORE_COLOR, AFTER_COLOR = "#1976d2", "#c62828", "#b0bec5", "#c62828"

# No script, no fetch, no frame, no form: the page can only be looked at.
# (frame-ancestors is not allowed in a <meta> policy: Chromium logs an error.)
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans","Noto Sans CJK SC",sans-serif;
 margin:0;color:#1c1c1c;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} \
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 4px}
.sub{color:#555;margin:0 0 16px}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:8px}
.figure{background:#fff;border:1px solid #e0e0e0;border-radius:6px;padding:8px 10px}
.figure b{display:block;font-size:18px} .figure span{color:#666;font-size:12px}
figure.chart{background:#fff;border:1px solid #e0e0e0;border-radius:6px;margin:8px 0;padding:8px 12px}
figure.chart figcaption{color:#555;font-size:12px;margin-bottom:4px}
svg{display:block;max-width:100%;height:auto}
svg text{font:11px system-ui,sans-serif;fill:#333}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:8px}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
.empty{color:#777;font-style:italic;padding:16px 0}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #e0e0e0;padding:5px 7px;vertical-align:top;text-align:left}
th{background:#f0f0f0}
td.copy{white-space:pre-wrap;unicode-bidi:plaintext;overflow-wrap:anywhere;max-width:420px}
td.facts{overflow-wrap:anywhere;max-width:300px;font-size:12px}
td.num{text-align:right;white-space:nowrap}
.st{display:inline-block;border-radius:3px;padding:0 5px;color:#fff;font-size:12px}
.reason{display:inline-block;background:#eceff1;border-radius:3px;padding:0 4px;margin:1px;font-size:11px}
.over{color:#c62828;font-weight:600}
footer{color:#888;font-size:12px;margin-top:24px}
"""


def esc(value: Any) -> str:
    """Text for HTML and SVG, attribute values included."""
    return html.escape("" if value is None else str(value), quote=True)


def clip(text: Any, limit: int) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "—"


def fmt_share(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def fmt_num(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def nice_max(value: float) -> float:
    """An axis top at or above ``value``: 1, 2, 2.5 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _svg(width: int, height: int, label: str, body: str, chart: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{esc(label)}" data-chart="{esc(chart)}">'
        f"<title>{esc(label)}</title>{body}</svg>"
    )


def _figure(chart: str, caption: str, content: str) -> str:
    return (
        f'<figure class="chart" id="chart-{esc(chart)}" data-chart="{esc(chart)}">'
        f"<figcaption>{caption}</figcaption>{content}</figure>"
    )


def _legend(items: Iterable[tuple[str, str]]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{color}"></i>{esc(name)}</span>' for name, color in items)
        + "</div>"
    )


def _empty(message: str) -> str:
    return f'<p class="empty">{esc(message)}</p>'


# --- Key figures ---------------------------------------------------------------------


def key_figures(summary: Mapping[str, Any]) -> str:
    quality = summary.get("quality") or {}
    before = (quality.get("before_repair") or {}).get("status_share") or {}
    after = quality.get("status_share") or {}
    repair = quality.get("repair") or {}
    corpus = quality.get("corpus") or {}
    review = quality.get("review_queue") or {}
    seconds = summary.get("seconds")
    rows = summary.get("rows_written")
    rate = (
        rows / seconds
        if isinstance(rows, int) and isinstance(seconds, (int, float)) and seconds > 0
        else None
    )
    figures = [
        (fmt_int(rows), "rows written"),
        (fmt_share(after.get(C.ACCEPTED)), f"accepted (before repair {fmt_share(before.get(C.ACCEPTED))})"),
        (fmt_share(after.get(C.REJECTED)), f"rejected (before repair {fmt_share(before.get(C.REJECTED))})"),
        (fmt_int(review.get("rows")), "rows for review"),
        (fmt_share(repair.get("fixed_share")), f"repaired of {fmt_int(repair.get('attempted'))} retried"),
        (fmt_int(summary.get("dead_letters")), "dead letters"),
        (fmt_num(seconds, 0) + " s" if isinstance(seconds, (int, float)) else "—", "wall time"),
        (fmt_num(rate, 2), "rows per second"),
        (fmt_share(corpus.get("length_compliance")), "within length limits"),
        (fmt_num(corpus.get("distinct_2"), 3), "distinct-2 (variety)"),
        (fmt_share(corpus.get("attribute_coverage")), "mention a product attribute"),
        (fmt_num((corpus.get("numeric_fidelity") or {}).get("mean"), 3), "numeric fidelity (mean)"),
    ]
    judge = quality.get("judge")
    if judge:  # --judge: the model judge's verdict mix and what it cost
        figures += [
            (
                fmt_share(judge.get("flagged_share")),
                f"flagged by the judge, of {fmt_int(judge.get('judged'))} judged "
                f"({fmt_share(judge.get('judged_share'))} of rows)",
            ),
            (
                fmt_int(judge.get("tokens")),
                f"judge tokens ({fmt_num(judge.get('tokens_per_judged_row'), 0)} a row)",
            ),
        ]
    cells = "".join(f'<div class="figure"><b>{esc(v)}</b><span>{esc(k)}</span></div>' for v, k in figures)
    return f'<section class="figures" id="figures">{cells}</section>'


# --- Status mix per channel ------------------------------------------------------------


def status_chart(status_by_channel: Mapping[str, Mapping[str, Any]]) -> str:
    """One horizontal bar per channel, split into accepted / review / rejected."""
    channels = sorted(status_by_channel)
    if not channels:
        return _figure("status", "Status mix per channel", _empty("no rows"))
    label_w, bar_w, row_h, top = 120, 440, 26, 6
    height = top + row_h * len(channels) + 6
    parts = []
    for i, channel in enumerate(channels):
        counts = {s: _count((status_by_channel[channel] or {}).get(s)) for s in C.STATUSES}
        total = sum(counts.values())
        y = top + i * row_h
        parts.append(
            f'<g class="bar" data-channel="{esc(channel)}" data-total="{total}">'
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{esc(channel)}</text>'
        )
        x = float(label_w)
        for status in C.STATUSES:
            n = counts[status]
            if not n:
                continue
            w = bar_w * n / total
            parts.append(
                f'<rect class="seg" data-status="{status}" data-count="{n}" x="{x:.2f}" y="{y}" '
                f'width="{w:.2f}" height="{row_h - 6}" fill="{STATUS_COLORS[status]}">'
                f"<title>{esc(channel)}: {n:,} {status} ({100 * n / total:.1f}%)</title></rect>"
            )
            x += w
        shares = " / ".join(f"{100 * counts[s] / total:.0f}%" if total else "0%" for s in C.STATUSES)
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 15}">{total:,} rows · {shares}</text></g>')
    svg = _svg(label_w + bar_w + 170, height, "Status mix per channel", "".join(parts), "status")
    return _figure(
        "status",
        "Status mix per channel (all rows; shares accepted / review / rejected)",
        _legend((s, STATUS_COLORS[s]) for s in C.STATUSES) + svg,
    )


# --- Rejection reasons ---------------------------------------------------------------


def reasons_chart(reasons: Mapping[str, Any], before: Optional[Mapping[str, Any]] = None) -> str:
    """One bar per reason code (final verdicts), with the count before repair beside it."""
    before = before or {}
    names = sorted(
        set(reasons) | set(before), key=lambda r: (-_count(reasons.get(r)), -_count(before.get(r)), r)
    )
    if not names:
        return _figure("reasons", "Rejection and review reasons", _empty("no reasons: every row passed"))
    top = nice_max(max(max(_count(reasons.get(r)) for r in names), max(_count(before.get(r)) for r in names)))
    label_w, bar_w, row_h = 190, 380, 24
    height = 6 + row_h * len(names) + 6
    parts = []
    for i, reason in enumerate(names):
        y = 6 + i * row_h
        after_n, before_n = _count(reasons.get(reason)), _count(before.get(reason))
        parts.append(
            f'<g class="bar" data-reason="{esc(reason)}" data-count="{after_n}" data-before="{before_n}">'
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc(reason)}</text>'
            f'<rect class="before" x="{label_w}" y="{y + 1}" width="{bar_w * before_n / top:.2f}" '
            f'height="{row_h - 4}" fill="{BEFORE_COLOR}"><title>{esc(reason)}: {before_n:,} before repair'
            f"</title></rect>"
            f'<rect class="after" x="{label_w}" y="{y + 5}" width="{bar_w * after_n / top:.2f}" '
            f'height="{row_h - 12}" fill="{AFTER_COLOR}"><title>{esc(reason)}: {after_n:,} after repair'
            f"</title></rect>"
            f'<text x="{label_w + bar_w + 6}" y="{y + 14}">{after_n:,} (before repair {before_n:,})'
            "</text></g>"
        )
    svg = _svg(label_w + bar_w + 170, height, "Rejection and review reasons", "".join(parts), "reasons")
    caption = "Reasons on final verdicts (a row can have several), and on the first draft before repair"
    return _figure(
        "reasons", caption, _legend((("after repair", AFTER_COLOR), ("before repair", BEFORE_COLOR))) + svg
    )


# --- Copy length per channel against its limit ----------------------------------------


def _limit_specs(summary: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Per channel, the configured (unit, max) of the length limit."""
    limits = ((summary.get("config") or {}).get("quality") or {}).get("limits") or {}
    return {
        ch: (str(spec.get("unit") or ""), spec.get("max"))
        for ch, spec in limits.items()
        if isinstance(spec, Mapping)
    }


def _histogram(lengths: Sequence[int], limit: Optional[int]) -> tuple[int, list[tuple[int, int, int, int]]]:
    """Bins of width ``w`` from 0: (lo, hi, within, over), one bin edge at limit + 1
    so a bin is wholly within or wholly over the limit."""
    upper = max(max(lengths), limit or 0)
    width = max(1, math.ceil((upper + 1) / HISTOGRAM_BINS))
    offset = ((limit + 1) % width) if limit is not None else 0  # align an edge with limit + 1
    start = offset - width if offset else 0
    bins: dict[int, list[int]] = {}
    for n in lengths:
        k = (n - start) // width
        b = bins.setdefault(k, [0, 0])
        b[1 if limit is not None and n > limit else 0] += 1
    last = (upper - start) // width
    return width, [
        (start + k * width, start + (k + 1) * width - 1, *bins.get(k, [0, 0])) for k in range(last + 1)
    ]


def length_panel(channel: str, lengths: list[int], limit: Optional[int], limits_seen: int, unit: str) -> str:
    width, bins = _histogram(lengths, limit)
    w, h, left, bottom, top_pad = 330, 160, 34, 22, 18
    plot_w, plot_h = w - left - 8, h - bottom - top_pad
    ymax = nice_max(max(within + over for _, _, within, over in bins))
    xmax = bins[-1][1] + 1
    xmin = bins[0][0]
    scale = plot_w / (xmax - xmin)
    parts = [
        (
            f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" '
            'stroke="#999"/>'
        ),
        f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end">{ymax:g}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>',
        f'<text x="{left}" y="{h - 6}">{max(xmin, 0)}</text>',
        f'<text x="{left + plot_w}" y="{h - 6}" text-anchor="end">{xmax - 1} {esc(unit)}</text>',
    ]
    for lo, hi, within, over in bins:
        n = within + over
        x = left + (lo - xmin) * scale
        bar_h = plot_h * n / ymax
        color = OVER_COLOR if over else WITHIN_COLOR
        parts.append(
            f'<rect class="bin" data-lo="{max(lo, 0)}" data-hi="{hi}" data-count="{n}" data-over="{over}" '
            f'x="{x + 0.5:.2f}" y="{top_pad + plot_h - bar_h:.2f}" width="{max(scale * width - 1, 0.5):.2f}" '
            f'height="{bar_h:.2f}" fill="{color}"><title>{max(lo, 0)}–{hi} {esc(unit)}: {n:,} copies'
            f"</title></rect>"
        )
    if limit is not None:
        lx = left + (limit + 1 - xmin) * scale
        parts.append(
            f'<line class="limit" data-limit="{limit}" x1="{lx:.2f}" y1="{top_pad - 4}" x2="{lx:.2f}" '
            f'y2="{top_pad + plot_h}" stroke="#000" stroke-dasharray="4 3"/>'
            f'<text x="{lx:.2f}" y="{top_pad - 7}" text-anchor="middle">limit {limit}</text>'
        )
    over_n = sum(o for *_, o in bins)
    ordered = sorted(lengths)
    median, p95 = (
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
    )
    note = f"{len(lengths):,} copies · median {median} · p95 {p95}"
    if limit is not None:
        note += f' · <span class="{"over" if over_n else ""}">{over_n:,} over the limit of {limit}</span>'
        if limits_seen > 1:
            note += f" (limits vary by row; the largest, {limit}, is drawn)"
    svg = _svg(w, h, f"Copy length, {channel}", "".join(parts), "length")
    return (
        f'<div class="panel" data-channel="{esc(channel)}" data-rows="{len(lengths)}" data-over="{over_n}">'
        f'<h3>{esc(channel)}</h3>{svg}<div class="sub">{note}</div></div>'
    )


def length_charts(copies: pa.Table, specs: Mapping[str, tuple[str, Any]]) -> str:
    caption = "Copy length per channel against its limit (in the channel's unit); red bins are over the limit"
    if copies.num_rows == 0 or C.COPY_LENGTH not in copies.column_names:
        return _figure("length", caption, _empty("no copies to measure"))
    has_limit = C.COPY_LENGTH_LIMIT in copies.column_names
    measured = copies.filter(pc.is_valid(copies[C.COPY_LENGTH]))
    if measured.num_rows == 0:
        return _figure("length", caption, _empty("no copy lengths recorded"))
    panels = []
    for channel in sorted(v for v in pc.unique(measured[C.CHANNEL]).to_pylist() if v is not None):
        rows = measured.filter(pc.equal(measured[C.CHANNEL], channel))
        values = rows[C.COPY_LENGTH].to_numpy().astype(int).tolist()
        seen = pc.unique(rows[C.COPY_LENGTH_LIMIT].drop_null()).to_pylist() if has_limit else []
        limit = int(max(seen)) if seen else None
        unit, configured_max = specs.get(channel, ("", None))
        # Name the unit only when the rows' limit is the configured one (SMS rows
        # carry their limit in characters while the config counts segments).
        panels.append(
            length_panel(channel, values, limit, len(seen), unit if configured_max == limit else "")
        )
    caption += f"; {measured.num_rows:,} rows measured"
    return _figure("length", esc(caption), '<div class="grid">' + "".join(panels) + "</div>")


# --- Throughput over time -----------------------------------------------------------------


def _clean_progress(progress: Any) -> list[dict[str, Any]]:
    """Samples with numeric t, rows_done (and output_tokens), sorted by t; junk dropped."""
    points = []
    for p in progress if isinstance(progress, list) else []:
        if not isinstance(p, Mapping):
            continue
        t, rows = p.get("t"), p.get("rows_done")
        if not isinstance(t, (int, float)) or not isinstance(rows, (int, float)) or isinstance(t, bool):
            continue
        if not (math.isfinite(t) and math.isfinite(rows)) or t < 0 or rows < 0:
            continue
        tokens = p.get("output_tokens")
        tokens = (
            tokens if isinstance(tokens, (int, float)) and math.isfinite(tokens) and tokens >= 0 else None
        )
        points.append(
            {
                "t": float(t),
                "rows_done": float(rows),
                "output_tokens": tokens,
                "phase": str(p.get("phase") or ""),
            }
        )
    return sorted(points, key=lambda p: p["t"])


def _line_panel(
    chart: str,
    title: str,
    xs: list[float],
    ys: list[float],
    phases: list[str],
    unit: str,
    colors: Mapping[str, str],
) -> str:
    w, h, left, bottom, top_pad = 500, 180, 54, 24, 10
    plot_w, plot_h = w - left - 12, h - bottom - top_pad
    xmax = nice_max(max(xs)) if xs and max(xs) > 0 else 1.0
    ymax = nice_max(max(ys)) if ys and max(ys) > 0 else 1.0
    pts = [(left + plot_w * x / xmax, top_pad + plot_h - plot_h * y / ymax) for x, y in zip(xs, ys)]
    parts = [
        (
            f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{left + plot_w}" y2="{top_pad + plot_h}" '
            'stroke="#999"/>'
        ),
        f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + plot_h}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top_pad + 8}" text-anchor="end">{ymax:,.6g}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end">0</text>',
        f'<text x="{left}" y="{h - 6}">0</text>',
        f'<text x="{left + plot_w}" y="{h - 6}" text-anchor="end">{xmax / 60:.3g} min</text>',
        f'<text x="{left + 6}" y="{top_pad + 10}">{esc(unit)}</text>',
    ]
    if len(pts) > 1:
        parts.append(
            '<polyline class="line" fill="none" stroke="#1565c0" stroke-width="1.5" points="'
            + " ".join(f"{x:.2f},{y:.2f}" for x, y in pts)
            + '"/>'
        )
    for (px, py), x, y, phase in zip(pts, xs, ys, phases):
        parts.append(
            f'<circle class="point" data-t="{x:g}" data-value="{y:.6g}" cx="{px:.2f}" cy="{py:.2f}" r="3.5" '
            f'fill="{colors.get(phase, PHASE_COLORS[0])}"><title>{x / 60:.1f} min'
            f"{' · ' + esc(phase) if phase else ''}: {y:,.1f} {esc(unit)}</title></circle>"
        )
    return f"<div><h3>{esc(title)}</h3>{_svg(w, h, title, ''.join(parts), chart)}</div>"


def throughput_chart(progress: Any) -> str:
    """Rows done over time, and the output-token rate between samples."""
    points = _clean_progress(progress)
    caption = "Throughput over time (sampled while the run streamed)"
    if not points:
        return _figure("throughput", caption, _empty("no throughput samples"))
    phases = [p["phase"] for p in points]
    colors = {ph: PHASE_COLORS[i % len(PHASE_COLORS)] for i, ph in enumerate(dict.fromkeys(phases))}
    xs = [p["t"] for p in points]
    rows = [p["rows_done"] for p in points]
    panels = [_line_panel("throughput-rows", "Rows done", xs, rows, phases, "rows", colors)]
    token_points = [p for p in points if p["output_tokens"] is not None]
    if token_points:
        rates, prev_t, prev_tok = [], 0.0, 0.0
        for p in token_points:  # rate over the interval since the previous sample (the run's start first)
            dt = p["t"] - prev_t
            rates.append(max(p["output_tokens"] - prev_tok, 0.0) / dt if dt > 0 else 0.0)
            prev_t, prev_tok = p["t"], p["output_tokens"]
        panels.append(
            _line_panel(
                "throughput-tokens",
                "Output tokens per second",
                [p["t"] for p in token_points],
                rates,
                [p["phase"] for p in token_points],
                "tok/s",
                colors,
            )
        )
    last = points[-1]
    if last["t"] > 0:
        caption += f"; mean {last['rows_done'] / last['t']:.2f} rows/s over {last['t'] / 60:.1f} min"
    legend = _legend(colors.items()) if any(phases) else ""
    return _figure("throughput", esc(caption), legend + '<div class="grid">' + "".join(panels) + "</div>")


# --- Sample copies with their product facts ---------------------------------------------


def _attributes_text(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return clip(value, MAX_FACT_CHARS)
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list) and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
        items = [tuple(v) for v in value]  # a map column as (key, value) pairs
    else:
        return "" if value is None else clip(value, MAX_FACT_CHARS)
    items = [(k, v) for k, v in items if v not in (None, "")]
    return " · ".join(f"{clip(k, 40)}: {clip(v, 60)}" for k, v in items[:MAX_ATTRIBUTES])


def _price_text(price: Any, currency: Any) -> str:
    if isinstance(price, (int, float)) and not isinstance(price, bool) and math.isfinite(price):
        return f"{price:,.2f} {clip(currency or '', 8)}".strip()
    return "—"


def _first_by_row_id(table: pa.Table, k: int) -> list[int]:
    """Positions (column ``__pos``) of the ``k`` rows with the smallest row ids."""
    if table.num_rows == 0:
        return []
    if C.ROW_ID not in table.column_names:
        return table["__pos"].to_pylist()[:k]
    top = table.take(
        pc.select_k_unstable(table, k=min(k, table.num_rows), sort_keys=[(C.ROW_ID, "ascending")])
    )
    return top.sort_by([(C.ROW_ID, "ascending")])["__pos"].to_pylist()


def pick_samples(copies: pa.Table, per_channel: int) -> list[dict[str, Any]]:
    """Up to ``per_channel`` rows a channel, taking accepted, review and rejected rows
    in turn, each in row-id order (a hash: effectively random, but stable)."""
    if copies.num_rows == 0:
        return []
    # Choose on the small columns (no full sort); take whole rows for the few chosen only.
    keys = copies.select([c for c in (C.ROW_ID, C.CHANNEL, C.STATUS) if c in copies.column_names])
    keys = keys.append_column("__pos", pa.array(range(copies.num_rows), pa.int64()))
    chosen: list[int] = []
    for channel in sorted(v for v in pc.unique(keys[C.CHANNEL]).to_pylist() if v is not None):
        in_channel = keys.filter(pc.equal(keys[C.CHANNEL], channel))
        by_status = [
            _first_by_row_id(in_channel.filter(pc.equal(in_channel[C.STATUS], s)), per_channel)
            for s in C.STATUSES
        ]
        picked: list[int] = []
        for i in range(per_channel):
            for group in by_status:
                if i < len(group) and len(picked) < per_channel:
                    picked.append(group[i])
        chosen.extend(picked)
    keep = [c for c in REPORT_COLUMNS if c in copies.column_names]
    return copies.select(keep).take(pa.array(chosen, pa.int64())).to_pylist()


def _product_facts(products: pa.Table, ids: set[str]) -> dict[str, dict[str, Any]]:
    if not ids or products is None or products.num_rows == 0 or C.PRODUCT_ID not in products.column_names:
        return {}
    wanted = [
        c
        for c in (C.PRODUCT_ID, "title", "brand", "category", "price", "currency", "attributes")
        if c in products.column_names
    ]
    ids_array = pa.array(sorted(ids), type=products.schema.field(C.PRODUCT_ID).type)
    rows = products.select(wanted).filter(pc.is_in(products[C.PRODUCT_ID], value_set=ids_array))
    facts: dict[str, dict[str, Any]] = {}
    for row in rows.to_pylist():
        facts.setdefault(row[C.PRODUCT_ID], row)  # the first row of a repeated id wins, as on input
    return facts


def samples_table(copies: pa.Table, products: pa.Table, per_channel: int) -> str:
    samples = pick_samples(copies, per_channel)
    if not samples:
        return '<section id="samples">' + _empty("no copies") + "</section>"
    facts = _product_facts(products, {s.get(C.PRODUCT_ID) for s in samples if s.get(C.PRODUCT_ID)})
    head = (
        "<tr><th>channel</th><th>locale</th><th>status</th><th>copy</th><th>length / limit</th>"
        "<th>product</th><th>price</th><th>key attributes</th></tr>"
    )
    body = []
    for s in samples:
        status = s.get(C.STATUS) or ""
        reasons = "".join(f'<span class="reason">{esc(r)}</span>' for r in (s.get(C.REASONS) or []))
        length, limit = s.get(C.COPY_LENGTH), s.get(C.COPY_LENGTH_LIMIT)
        over = isinstance(length, int) and isinstance(limit, int) and length > limit
        length_text = f"{'—' if length is None else length} / {'—' if limit is None else limit}"
        product = facts.get(s.get(C.PRODUCT_ID)) or {}
        title = clip(product.get("title"), MAX_FACT_CHARS) or "(unknown product)"
        brand = clip(product.get("brand"), MAX_FACT_CHARS)
        category = clip(product.get("category"), 60)
        color = STATUS_COLORS.get(status, "#616161")
        body.append(
            f'<tr class="sample" data-channel="{esc(s.get(C.CHANNEL))}" data-status="{esc(status)}">'
            f"<td>{esc(s.get(C.CHANNEL))}</td><td>{esc(s.get(C.LOCALE))}</td>"
            f'<td><span class="st" style="background:{color}">{esc(status)}</span><br>{reasons}</td>'
            f'<td class="copy">{esc(clip(s.get(C.TEXT), MAX_COPY_CHARS))}</td>'
            f'<td class="num{" over" if over else ""}">{esc(length_text)}</td>'
            f'<td class="facts"><b>{esc(title)}</b><br>{esc(brand)}{" · " if brand and category else ""}'
            f"{esc(category)}<br><small>{esc(clip(s.get(C.PRODUCT_ID), 64))}</small></td>"
            f'<td class="num">{esc(_price_text(product.get("price"), product.get("currency")))}</td>'
            f'<td class="facts">{esc(_attributes_text(product.get("attributes")))}</td></tr>'
        )
    note = (
        f"Up to {per_channel} copies a channel, accepted, review and rejected in turn, with the product "
        "facts they were written from (copy text is the model's output, shown as plain text)."
    )
    return (
        f'<section id="samples"><p class="sub">{esc(note)}</p>'
        f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table></section>"
    )


# --- The page ---------------------------------------------------------------------------


def render_report(
    summary: Mapping[str, Any],
    copies: pa.Table,
    products: pa.Table,
    progress: Optional[list[dict[str, Any]]] = None,
    *,
    samples_per_channel: int = SAMPLES_PER_CHANNEL,
    experiments: Sequence[Any] = (),
) -> str:
    """The run report as one HTML document (no I/O). ``progress`` defaults to
    ``summary["progress"]``; missing or empty, the throughput chart says so.
    ``experiments``: ExperimentViews (factory/experiments/report.py) for the
    Experiments section; none, no section."""
    missing = [c for c in (C.CHANNEL, C.STATUS) if c not in copies.column_names]
    if missing:
        raise ValueError(
            f"render_report: the copies table has no column {', '.join(missing)} "
            f"(read the columns in factory.report.REPORT_COLUMNS)"
        )
    if progress is None:
        progress = summary.get("progress")
    quality = summary.get("quality") or {}
    run_id = summary.get("run_id") or "run"
    subtitle = " · ".join(
        esc(x)
        for x in (
            f"date {summary.get('run_date', '—')}",
            f"campaign {summary.get('campaign', '—')}",
            f"attempt {summary.get('attempt', '—')}",
            f"model {clip(summary.get('model', '—'), 120)}",
            f"device {summary.get('device', '—')}",
        )
    )
    sections = [
        f'<h1>Copy factory run {esc(run_id)}</h1><p class="sub">{subtitle}</p>',
        key_figures(summary),
        "<h2>Status mix</h2>",
        status_chart(quality.get("status_by_channel") or {}),
        "<h2>Rejection reasons</h2>",
        reasons_chart(
            quality.get("reasons") or {}, (quality.get("before_repair") or {}).get("reasons") or {}
        ),
        "<h2>Copy length</h2>",
        length_charts(copies, _limit_specs(summary)),
        "<h2>Throughput</h2>",
        throughput_chart(progress),
        _experiments(experiments),
        "<h2>Sample copies</h2>",
        samples_table(copies, products, samples_per_channel),
        "<footer>Generated by copy-factory from summary.json and the run's copies. "
        "Self-contained: no scripts, no external resources.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="referrer" content="no-referrer"><meta name="viewport" content="width=device-width">'
        '<link rel="icon" href="data:,">'
        f"<title>Run report {esc(run_id)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )


def _experiments(views: Sequence[Any]) -> str:
    if not views:
        return ""
    from factory.experiments.report import experiments_section  # it draws with this module's helpers

    return experiments_section(views)


def write_report(
    run_dir: Location,
    summary: Mapping[str, Any],
    copies: pa.Table,
    products: pa.Table,
    progress: Optional[list[dict[str, Any]]] = None,
    experiments: Sequence[Any] = (),
) -> dict[str, Any]:
    """Render and write ``report.html`` into ``run_dir`` (beside summary.json)."""
    data = render_report(summary, copies, products, progress, experiments=experiments).encode("utf-8")
    target = run_dir.join(REPORT)
    put_bytes(target, data, content_type="text/html; charset=utf-8")
    return {"file": REPORT, "bytes": len(data)}

"""The run report's Experiments section: per-arm rates with intervals, lift
over holdout, and the allocation night by night.

    view = experiment_view(experiment, campaign_id, feedback_table, allocation_records)
    html = experiments_section([view])      # pure; factory.report.render_report(..., experiments=[view])

Same rules as factory/report.py: inline SVG drawn here, no script, every
value escaped. Rates are per delivered copy with 95 % Wilson intervals; lift
is conversions per impression of each arm against the holdout's (the only
outcome a holdout row can have), with the Katz interval; a lift whose
interval spans zero is shown as not yet significant. The chart is one
column per night: the holdout's share at the bottom (fixed), then each arm's
share of all users, as that night's manifest recorded it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import pyarrow as pa

from factory.experiments.bandit import ArmStats, arm_stats
from factory.experiments.config import HOLDOUT, ExperimentConfig
from factory.experiments.stats import Interval, lift, wilson
from factory.report import _empty, _figure, _legend, _svg, esc, fmt_int

ARM_COLORS = ("#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e", "#827717")
HOLDOUT_COLOR = "#9e9e9e"


@dataclass
class ExperimentView:
    """What the section shows of one experiment (build it with ``experiment_view``)."""

    experiment_id: str
    campaign_id: str
    metric: str
    holdout: float
    arms: list[str]  # declaration order: colours and rows follow it
    stats: dict[str, ArmStats] = field(default_factory=dict)  # holdout included
    history: list[Mapping[str, Any]] = field(default_factory=list)  # allocation records, oldest first


def experiment_view(
    experiment: ExperimentConfig,
    campaign_id: str,
    feedback: Optional[pa.Table],
    allocations: Sequence[Mapping[str, Any]],
) -> ExperimentView:
    """``allocations``: the ``experiment.allocation`` records of this experiment's
    published nights and tonight's (any order; other experiments' are skipped)."""
    history = sorted(
        (a for a in allocations if a and a.get("experiment_id") == experiment.experiment_id),
        key=lambda a: a["run_date"],
    )
    known = experiment.arm_names
    seen = [a for r in history for a in r.get("shares", {}) if a not in known]
    return ExperimentView(
        experiment.experiment_id,
        campaign_id,
        experiment.metric,
        experiment.holdout,
        known + list(dict.fromkeys(seen)),
        arm_stats(feedback, campaign_id, experiment.experiment_id),
        history,
    )


def _rate(interval: Interval) -> str:
    if interval.value is None:
        return "—"
    return f"{100 * interval.value:.2f}% <small>[{100 * interval.low:.2f}, {100 * interval.high:.2f}]</small>"


def _lift(interval: Interval) -> str:
    if interval.low is None:
        return "—"
    value = "—" if interval.value is None else f"{100 * interval.value:+.1f}%"
    sure = interval.low > 0 or interval.high < 0
    note = "" if sure else ' <small class="sub">(not significant yet)</small>'
    return f"{value} <small>[{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]</small>{note}"


def arms_table(view: ExperimentView) -> str:
    held = view.stats.get(HOLDOUT, ArmStats())
    latest = view.history[-1] if view.history else {}
    shares, best = latest.get("shares") or {}, latest.get("p_best") or {}
    head = (
        "<tr><th>arm</th><th>impressions</th><th>clicks</th><th>CTR [95% CI]</th><th>conversions</th>"
        "<th>CVR [95% CI]</th><th>lift in CVR over holdout [95% CI]</th><th>P(best)</th>"
        "<th>tonight's share</th></tr>"
    )
    body = []
    for i, arm in enumerate([*view.arms, HOLDOUT] if view.holdout > 0 or held.impressions else view.arms):
        s = view.stats.get(arm, ArmStats())
        is_holdout = arm == HOLDOUT
        color = HOLDOUT_COLOR if is_holdout else ARM_COLORS[i % len(ARM_COLORS)]
        up = (
            Interval(None, None, None)
            if is_holdout
            else lift(s.conversions, s.impressions, held.conversions, held.impressions)
        )
        share = (
            view.holdout if is_holdout else (shares.get(arm, 0.0) * (1 - view.holdout) if shares else None)
        )
        body.append(
            f'<tr class="arm" data-arm="{esc(arm)}" data-impressions="{s.impressions}" '
            f'data-clicks="{s.clicks}" '
            f'data-conversions="{s.conversions}">'
            f'<td><span class="st" style="background:{color}">{esc(arm)}</span></td>'
            f'<td class="num">{fmt_int(s.impressions)}</td>'
            f'<td class="num">{"—" if is_holdout else fmt_int(s.clicks)}</td>'
            f'<td class="num">{"—" if is_holdout else _rate(wilson(s.clicks, s.impressions))}</td>'
            f'<td class="num">{fmt_int(s.conversions)}</td>'
            f'<td class="num">{_rate(wilson(s.conversions, s.impressions))}</td>'
            f'<td class="num lift">{"baseline" if is_holdout else _lift(up)}</td>'
            f'<td class="num">{"—" if is_holdout or arm not in best else f"{100 * best[arm]:.1f}%"}</td>'
            f'<td class="num">{"—" if share is None else f"{100 * share:.1f}%"}</td></tr>'
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def allocation_chart(view: ExperimentView) -> str:
    """One stacked column per night: holdout, then each arm's share of all users."""
    chart = f"allocation-{view.experiment_id}"
    caption = "Allocation night by night (share of all users; the holdout is fixed)"
    if not view.history:
        return _figure(chart, caption, _empty("no allocation recorded yet"))
    colors = {a: ARM_COLORS[i % len(ARM_COLORS)] for i, a in enumerate(view.arms)}
    left, top, plot_h, col_w, gap = 40, 8, 180, 22, 6
    width = left + len(view.history) * (col_w + gap) + 10
    height = top + plot_h + 40
    parts = [
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">100%</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for n, record in enumerate(view.history):
        x = left + n * (col_w + gap)
        holdout = float(record.get("holdout") or 0.0)
        stack = [(HOLDOUT, holdout)] + [
            (a, float(s) * (1 - holdout)) for a, s in (record.get("shares") or {}).items()
        ]
        y = float(top + plot_h)
        day = str(record.get("run_date", ""))
        parts.append(f'<g class="night" data-night="{esc(day)}" data-method="{esc(record.get("method"))}">')
        for arm, share in stack:
            h = plot_h * share
            y -= h
            fill = HOLDOUT_COLOR if arm == HOLDOUT else colors.get(arm, "#616161")
            parts.append(
                f'<rect class="share" data-arm="{esc(arm)}" data-share="{share:.6f}" x="{x}" y="{y:.2f}" '
                f'width="{col_w}" height="{h:.2f}" fill="{fill}"><title>{esc(day)}: {esc(arm)} '
                f"{100 * share:.1f}%</title></rect>"
            )
        parts.append(
            f'<text x="{x + col_w / 2}" y="{top + plot_h + 14}" text-anchor="middle">{esc(day[5:])}</text>'
            "</g>"
        )
    svg = _svg(width, height, caption, "".join(parts), chart)
    legend = _legend([(HOLDOUT, HOLDOUT_COLOR)] + list(colors.items()))
    return _figure(chart, esc(caption) + f"; {len(view.history)} night(s)", legend + svg)


def experiment_block(view: ExperimentView) -> str:
    latest = view.history[-1] if view.history else {}
    method = latest.get("method") or "—"
    sub = (
        f"campaign {view.campaign_id} · judged by {view.metric}s per impression · holdout "
        f"{100 * view.holdout:.1f}% of users · tonight's allocation: {method}"
    )
    if latest.get("seed") is not None:
        sub += (
            f" (seed {latest['seed']}, {latest.get('draws')} draws, "
            f"floor {100 * float(latest.get('floor', 0)):.1f}%)"
        )
    return (
        f'<section class="experiment" id="experiment-{esc(view.experiment_id)}" '
        f'data-experiment="{esc(view.experiment_id)}"><h3>{esc(view.experiment_id)}</h3>'
        f'<p class="sub">{esc(sub)}</p>{arms_table(view)}{allocation_chart(view)}</section>'
    )


def experiments_section(views: Sequence[ExperimentView]) -> str:
    """The Experiments section (heading included); empty text when there is none."""
    if not views:
        return ""
    note = (
        "Rates are per delivered copy (a copy counts once however often it was shown), from the feedback "
        "table; intervals are 95%. Holdout users got no copy; their conversions per send opportunity are the "
        "baseline of the lift."
    )
    return (
        f'<h2>Experiments</h2><section id="experiments"><p class="sub">{esc(note)}</p>'
        + "".join(experiment_block(v) for v in views)
        + "</section>"
    )

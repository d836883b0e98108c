"""The run report's Experiments section: figures, lift, the night-by-night chart, escaping."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa

from factory import columns as C
from factory.experiments.bandit import ArmStats, allocate, previous_allocation
from factory.experiments.config import ArmConfig, ExperimentConfig
from factory.experiments.report import ExperimentView, experiment_view, experiments_section
from factory.experiments.table import FEEDBACK_SCHEMA
from factory.report import render_report

EXP = ExperimentConfig(
    experiment_id="voice_1",
    holdout=0.1,
    arms=[ArmConfig(name="cosy", brand_voice="warm"), ArmConfig(name="crisp", brand_voice="crisp")],
)


def _feedback() -> pa.Table:
    rows = [
        ("spring", "voice_1", "cosy", "push@a", "push", "en-US", 10_000, 300, 120),
        ("spring", "voice_1", "crisp", "push@b", "push", "en-US", 10_000, 200, 100),
        ("spring", "voice_1", "holdout", None, "push", "en-US", 20_000, 0, 160),
    ]
    names = [f.name for f in FEEDBACK_SCHEMA][:9]
    return pa.Table.from_pylist(
        [dict(zip(names, r)) for r in rows], schema=pa.schema(list(FEEDBACK_SCHEMA)[:9])
    )


def _history() -> list[dict]:
    records, previous, stats = [], None, {}
    for night in range(4):
        day = dt.date(2026, 12, 1) + dt.timedelta(days=night)
        alloc = allocate(EXP, day, stats, previous)
        previous = {**alloc.record(), "run_id": f"{day}_spring"}
        records.append(alloc.record())
        stats = {
            "cosy": ArmStats(2500 * (night + 1), 75 * (night + 1)),
            "crisp": ArmStats(2500 * (night + 1), 50 * (night + 1)),
        }
    return records


def test_the_section_shows_rates_lift_and_every_night():
    history = _history()
    view = experiment_view(EXP, "spring", _feedback(), list(reversed(history)))  # any order in
    html = experiments_section([view])
    assert html.startswith("<h2>Experiments</h2>")
    cosy = re.search(r'<tr class="arm" data-arm="cosy"[^>]*>(.*?)</tr>', html).group(1)
    assert "3.00% <small>[2.68, 3.35]</small>" in cosy  # CTR 300 / 10,000 with its Wilson interval
    assert "+50.0%" in cosy and "not significant" not in cosy  # CVR 1.2 % against the holdout's 0.8 %
    crisp = re.search(r'<tr class="arm" data-arm="crisp"[^>]*>(.*?)</tr>', html).group(1)
    assert "+25.0%" in crisp and "not significant yet" in crisp
    assert 'data-arm="holdout"' in html and "baseline" in html
    nights = re.findall(r'<g class="night" data-night="([^"]+)" data-method="([^"]+)"', html)
    assert [n for n, _ in nights] == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
    assert [m for _, m in nights] == ["declared", "thompson", "thompson", "thompson"]
    for night in re.findall(r'<g class="night".*?</g>', html):
        shares = [float(v) for v in re.findall(r'data-share="([0-9.]+)"', night)]
        assert abs(sum(shares) - 1) < 1e-5 and shares[0] == 0.1  # holdout first, fixed
    assert "seed " in html and "floor 5.0%" in html


def test_the_section_in_the_report_page_and_escaped():
    view = ExperimentView(
        "<script>x</script>", "spring", "click", 0.0, ["a", "b"], {"a": ArmStats(10, 1, 0)}, []
    )
    copies = pa.table({C.CHANNEL: pa.array([], pa.string()), C.STATUS: pa.array([], pa.string())})
    page = render_report({"run_id": "r"}, copies, pa.table({}), [], experiments=[view])
    assert "<h2>Experiments</h2>" in page and "<script>" not in page and "no allocation recorded yet" in page
    assert "<h2>Experiments</h2>" not in render_report({"run_id": "r"}, copies, pa.table({}), [])
    assert previous_allocation({"run_id": "r"}) is None

"""Experiments in campaign files, and who is in which arm.

Declaration mistakes are named with file, line and setting like every other
campaign mistake; an arm may not change meaning within an experiment; the
assignment is a pure function of (experiment, user, holdout, layout), the
holdout never moves, and a change of shares moves no more users than it must.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from factory import columns as C
from factory.campaigns import CampaignError, load_campaign, load_campaigns
from factory.experiments.assign import (
    ARM,
    EXPERIMENT_ID,
    HOLDOUT_SCHEMA,
    UNITS,
    AssignArms,
    Assigner,
    HoldoutRows,
    Layout,
    to_units,
)
from factory.experiments.config import HOLDOUT, check_unchanged, fingerprint, manifest_record
from factory.prompts import load_templates

TEMPLATES = load_templates()
BASE = """\
campaign_id: spring
channels: [push, sms]
brand_voice: calm
"""
EXPERIMENT = (
    BASE
    + """\
experiment:
  experiment_id: voice_1
  holdout: 0.05
  arms:
    - name: cosy
      brand_voice: warm and cosy
    - name: crisp
      brand_voice: short and crisp
      sampling: {temperature: 0.7}
"""
)


def _write(tmp_path, text: str) -> Path:
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    (folder / "spring.yaml").write_text(text)
    return folder


def _campaign(tmp_path, text: str, templates=TEMPLATES):
    campaign, problems = load_campaign(_write(tmp_path, text) / "spring.yaml", templates)
    assert not problems, problems
    return campaign.config


def test_an_experiment_loads_with_its_arm_definitions(tmp_path):
    config = _campaign(tmp_path, EXPERIMENT)
    exp = config.experiment
    assert exp.experiment_id == "voice_1" and exp.holdout == 0.05 and exp.allocation == "thompson"
    assert exp.initial_shares() == {"cosy": 0.5, "crisp": 0.5}
    defs = config.arm_definitions
    assert defs["cosy"]["brand_voice"] == "warm and cosy" and defs["crisp"]["sampling"] == {
        "temperature": 0.7
    }
    assert defs["cosy"]["templates"] == {
        "push": TEMPLATES["push"].file_version,
        "sms": TEMPLATES["sms"].file_version,
    }
    assert fingerprint(defs["cosy"]) != fingerprint(defs["crisp"])
    # The run's JobConfig carries the experiment as declared (the nightly run plans its nights from it).
    from factory.config import build_config

    assert build_config({}, config.job_values()).experiment == exp


def test_an_arm_with_its_own_templates_folder(tmp_path):
    folder = tmp_path / "push_v2"
    folder.mkdir()
    source = Path(TEMPLATES["push"].source).read_text()
    (folder / "push.yaml").write_text(source.replace("at most 100 characters", "at most 90 characters"))
    text = (
        BASE
        + f"experiment:\n  experiment_id: t1\n  arms:\n    - name: old\n    - name: new\n      templates: "
        f"{folder}\n"
    )
    defs = _campaign(tmp_path, text).arm_definitions
    assert defs["old"]["templates"]["push"] == TEMPLATES["push"].file_version
    assert defs["new"]["templates"]["push"] != TEMPLATES["push"].file_version
    assert (
        defs["new"]["templates"]["sms"] == TEMPLATES["sms"].file_version
    )  # not in the folder: the campaign's


def _arms(*lines: str, head: str = "") -> str:
    return (
        BASE
        + "experiment:\n  experiment_id: e1\n"
        + head
        + "  arms:\n"
        + "".join(f"    {line}\n" for line in lines)
    )


TWO = ("- name: a\n      brand_voice: bold", "- name: b\n      brand_voice: gentle")


@pytest.mark.parametrize(
    "body, where, message",
    [
        (_arms("- name: a"), "experiment.arms", "at least two arms (has 1)"),
        (
            _arms("- name: a\n      brand_voice: x", "- name: a\n      brand_voice: y"),
            "experiment.arms",
            "arm name 'a' is used twice (arms.0 and arms.1)",
        ),
        (
            _arms("- name: holdout", "- name: b"),
            "experiment.arms.0.name",
            "'holdout' is the name of the users",
        ),
        (_arms("- name: 'a b'", "- name: b"), "experiment.arms.0.name", "use letters, digits"),
        (
            _arms("- name: a\n      share: 0.5", "- name: b\n      share: 0.4\n      brand_voice: x"),
            "experiment.arms",
            "add up to 0.9, not 1",
        ),
        (
            _arms("- name: a\n      share: 0.5", "- name: b\n      brand_voice: x"),
            "experiment.arms",
            "every arm a share, or none",
        ),
        (_arms(*TWO, head="  holdout: 0.6\n"), "experiment.holdout", "must be at most 0.5"),
        (_arms(*TWO, head="  floor: 0.6\n"), "experiment.floor", "must be at most 0.5"),
        (
            _arms(*TWO, "- name: c\n      brand_voice: c", head="  floor: 0.4\n"),
            "experiment",
            "floor 0.4 for each of 3 arms is more than all the traffic",
        ),
        (_arms(*TWO, head="  metric: revenue\n"), "experiment.metric", "is not one of"),
        (_arms(*TWO, head="  allocation: epsilon\n"), "experiment.allocation", "is not one of"),
        (_arms(*TWO, head="  holdout_share: 0.1\n"), "experiment.holdout_share", "did you mean 'holdout'?"),
        (_arms("- name: a", "- name: b"), "experiment", "arms 'a' and 'b' mean the same"),
        (
            _arms("- name: a\n      variant: 1", "- name: b\n      variant: 0"),
            "experiment",
            "arms.0 (a): variant 1 does not exist: the campaign writes 1 variant(s)",
        ),
        (
            _arms("- name: a\n      templates: /no/such/folder", "- name: b"),
            "experiment",
            "arms.0 (a): templates",
        ),
        (
            _arms("- name: a\n      sampling: {temperature: 5}", "- name: b"),
            "experiment.arms.0.sampling.temperature",
            "must be at most 2",
        ),
        (BASE + "experiment:\n  arms: []\n", "experiment.experiment_id", "required, but missing"),
    ],
)
def test_each_experiment_mistake_names_file_line_and_setting(tmp_path, body, where, message):
    folder = _write(tmp_path, body)
    with pytest.raises(CampaignError) as caught:
        load_campaigns(folder, TEMPLATES)
    problems = [p for p in caught.value.problems if where + ":" in p]
    assert problems, caught.value.problems
    assert re.match(
        rf"{re.escape(str(folder / 'spring.yaml'))} line \d+: {re.escape(where)}: ", problems[0]
    ), problems
    assert message in problems[0], problems[0]


def test_variant_arms_need_the_campaign_to_write_the_variants(tmp_path):
    config = _campaign(
        tmp_path,
        BASE
        + "variants: 2\n"
        + _arms("- name: a\n      variant: 0", "- name: b\n      variant: 1")[len(BASE) :],
    )
    assert [d["variant"] for d in config.arm_definitions.values()] == [0, 1]


def test_an_arm_voice_needs_the_placeholder(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(Path(TEMPLATES["push"].source).parent, templates)
    (templates / "sms.yaml").write_text((templates / "sms.yaml").read_text().replace("  {brand_voice}\n", ""))
    folder = _write(tmp_path, "campaign_id: spring\nchannels: [push, sms]\n" + _arms(*TWO)[len(BASE) :])
    with pytest.raises(
        CampaignError,
        match=r"arms.0 \(a\): brand_voice never reaches the model: the template\(s\) "
        r"of sms have no \{brand_voice\}",
    ):
        load_campaigns(folder, load_templates(templates))


# --------------------------------------------------------------------------- an arm keeps its meaning


def test_an_arm_that_changes_meaning_is_refused_until_the_id_changes(tmp_path):
    first = _campaign(tmp_path, EXPERIMENT)
    previous = manifest_record(first.experiment, first.arm_definitions)
    assert check_unchanged(previous, first.experiment, first.arm_definitions) == []

    changed = _campaign(tmp_path, EXPERIMENT.replace("short and crisp", "loud and proud"))
    [problem] = check_unchanged(
        previous, changed.experiment, changed.arm_definitions, where="spring.yaml: experiment"
    )
    assert problem.startswith(
        "spring.yaml: experiment: arm 'crisp' of experiment 'voice_1' now means something else"
    )
    assert (
        "brand_voice was 'short and crisp', now 'loud and proud'" in problem
        and "new experiment_id" in problem
    )

    holdout = _campaign(tmp_path, EXPERIMENT.replace("holdout: 0.05", "holdout: 0.1"))
    [problem] = check_unchanged(previous, holdout.experiment, holdout.arm_definitions)
    assert "experiment.holdout: was 0.05" in problem

    renamed = _campaign(
        tmp_path, EXPERIMENT.replace("short and crisp", "loud and proud").replace("voice_1", "voice_2")
    )
    assert check_unchanged(previous, renamed.experiment, renamed.arm_definitions) == []
    # New arms, new shares, a new channel: allowed.
    grown = _campaign(
        tmp_path,
        EXPERIMENT.replace("[push, sms]", "[push, sms, email_subject]")
        + "    - name: bold\n      brand_voice: bold\n",
    )
    assert check_unchanged(previous, grown.experiment, grown.arm_definitions) == []


def test_an_edited_template_changes_the_arm(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(Path(TEMPLATES["push"].source).parent, templates)
    before = _campaign(tmp_path, EXPERIMENT, load_templates(templates))
    (templates / "push.yaml").write_text((templates / "push.yaml").read_text() + "# a comment\n")
    after = _campaign(tmp_path, EXPERIMENT, load_templates(templates))
    problems = check_unchanged(
        manifest_record(before.experiment, before.arm_definitions), after.experiment, after.arm_definitions
    )
    assert len(problems) == 2 and all("the push template was push@" in p for p in problems)


# --------------------------------------------------------------------------- assignment


USERS = [f"U{i:06d}" for i in range(20_000)]


def _counts(assigner: Assigner) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in USERS:
        arm = assigner.arm_of(u)
        out[arm] = out.get(arm, 0) + 1
    return out


def test_assignment_is_deterministic_and_matches_the_shares():
    layout = Layout.contiguous({"a": 0.2, "b": 0.3, "c": 0.5})
    first, again = Assigner("e1", 0.1, layout), Assigner("e1", 0.1, Layout.from_json(layout.to_json()))
    assert [first.arm_of(u) for u in USERS] == [again.arm_of(u) for u in USERS]
    counts = _counts(first)
    n = len(USERS)
    assert abs(counts[HOLDOUT] / n - 0.1) < 0.01
    for arm, share in (("a", 0.2), ("b", 0.3), ("c", 0.5)):
        assert abs(counts[arm] / n - 0.9 * share) < 0.015, counts
    other = Assigner("e2", 0.1, layout)  # another experiment reshuffles
    assert sum(first.arm_of(u) == HOLDOUT and other.arm_of(u) == HOLDOUT for u in USERS) < 0.02 * n


def test_holdout_users_never_move_and_shares_move_only_what_they_must():
    layout = Layout.contiguous({"a": 0.34, "b": 0.33, "c": 0.33})
    before = Assigner("e1", 0.05, layout)
    moved_to = layout.rebalance({"a": 0.14, "b": 0.33, "c": 0.53})  # a gives 0.2 to c; b keeps its share
    after = Assigner("e1", 0.05, moved_to)
    assert moved_to.units() == to_units({"a": 0.14, "b": 0.33, "c": 0.53})
    was, now = [before.arm_of(u) for u in USERS], [after.arm_of(u) for u in USERS]
    assert all((w == HOLDOUT) == (n == HOLDOUT) for w, n in zip(was, now))
    assert not [1 for w, n in zip(was, now) if w == "b" and n != "b"]  # b's users stay put
    moved = [(w, n) for w, n in zip(was, now) if w != n]
    assert set(moved) == {("a", "c")}
    assert abs(len(moved) / len(USERS) - 0.95 * 0.2) < 0.01
    # Cumulative shares would have moved b's users too: the layout is why they stay.
    cumulative = Assigner("e1", 0.05, Layout.contiguous({"a": 0.14, "b": 0.33, "c": 0.53}))
    assert sum(w != cumulative.arm_of(u) for u, w in zip(USERS, was)) > 1.5 * len(moved)


def test_rebalancing_is_pure_and_covers_the_range():
    layout = Layout.contiguous({"a": 0.5, "b": 0.5})
    for shares in (
        {"a": 0.9, "b": 0.1},
        {"a": 0.2, "b": 0.3, "c": 0.5},
        {"b": 0.6, "c": 0.4},
        {"b": 0.333333, "c": 0.333333, "d": 0.333334},
    ):
        nxt = layout.rebalance(shares)
        nxt.check()
        assert nxt == layout.rebalance(shares)
        assert nxt.units() == {a: n for a, n in to_units(shares).items() if n}
        assert sum(nxt.units().values()) == UNITS
        layout = nxt
    assert "a" not in layout.units()  # a dropped arm holds nothing


def test_the_ray_stage_and_the_holdout_file():
    users = ["U1", "U2", "U3", "U4", "U5", "U6", "U7", "U8"]
    batch = pa.table(
        {
            C.USER_ID: users,
            C.PRODUCT_ID: ["P1"] * 8,
            C.CHANNEL: ["push"] * 8,
            C.CAMPAIGN_ID: ["spring"] * 8,
            C.VARIANT: pa.array([0, 1] * 4, pa.int32()),
            C.LOCALE: ["en-US"] * 8,
        }
    )
    layout = Layout.contiguous({"a": 0.5, "b": 0.5})
    out = AssignArms("e1", 0.5, layout.to_json())(batch)
    assigner = Assigner("e1", 0.5, layout)
    assert out[ARM].to_pylist() == [assigner.arm_of(u) for u in users]
    assert set(out[EXPERIMENT_ID].to_pylist()) == {"e1"}
    held = HoldoutRows("2026-11-23_spring", dt.date(2026, 11, 23))(out)
    assert held.schema == HOLDOUT_SCHEMA
    expected = [u for u, a, v in zip(users, out[ARM].to_pylist(), [0, 1] * 4) if a == HOLDOUT and v == 0]
    assert held[C.USER_ID].to_pylist() == expected and expected
    assert len(set(held[C.ROW_ID].to_pylist())) == held.num_rows


# --------------------------------------------------------------------------- one night, as the nightly run
# plans it


def _publish(output, day: dt.date, night) -> None:
    from factory.publish import Attempt, publish
    from factory.reader import run_location

    attempt = Attempt(run_location(output, day, "spring"), 1)
    publish(
        attempt, {"run_id": f"{day}_spring", "attempt": 1, "files": {}, "experiment": night.manifest_record()}
    )


def _feedback(folder: Path, counts: dict[str, tuple[int, int]]) -> None:
    import json as _json

    import pyarrow.parquet as pq

    from factory.experiments.table import FEEDBACK_SCHEMA, SUMMARY, TABLE, digest

    rows = [
        {
            C.CAMPAIGN_ID: "spring",
            EXPERIMENT_ID: "voice_1",
            ARM: arm,
            C.CHANNEL: "push",
            "impressions": n,
            "clicks": k,
            "conversions": 0,
        }
        for arm, (n, k) in counts.items()
    ]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=FEEDBACK_SCHEMA), folder / TABLE)
    data = (folder / TABLE).read_bytes()
    (folder / SUMMARY).write_text(_json.dumps({"table": {"file": TABLE, "sha256": digest(data)}}))


def test_a_night_is_planned_pinned_and_replayed(tmp_path):
    from factory.errors import UsageError
    from factory.experiments.night import PINNED, plan_night
    from factory.storage import resolve

    config = _campaign(tmp_path, EXPERIMENT)
    out = resolve(str(tmp_path / "nightly"))
    day1, day2 = dt.date(2026, 12, 1), dt.date(2026, 12, 2)
    night1 = plan_night(config, day1, out, out.join("a1"))
    assert night1.source == "computed" and night1.allocation["method"] == "declared"
    assert night1.allocation["feedback"] is None
    _publish(out, day1, night1)
    _feedback(tmp_path / "feedback", {"cosy": (5000, 150), "crisp": (5000, 100), "holdout": (300, 0)})
    feedback = resolve(str(tmp_path / "feedback"))
    night2 = plan_night(config, day2, out, out.join("a2"), feedback)
    alloc = night2.allocation
    assert alloc["method"] == "thompson" and alloc["continues"] == "2026-12-01_spring"
    assert alloc["shares"]["cosy"] > 0.9 and alloc["feedback"]["sha256"].startswith("sha256:")
    assert (tmp_path / "nightly" / "a2" / PINNED).exists()
    # A resumed process of the same attempt, after the feedback moved on: the pinned allocation, unchanged.
    _feedback(tmp_path / "feedback", {"cosy": (5000, 100), "crisp": (5000, 150)})
    again = plan_night(config, day2, out, out.join("a2"), feedback)
    assert again.source == "pinned" and again.allocation == alloc
    # A --force rerun (a new attempt) of the published night 2 replays its allocation.
    _publish(out, day2, night2)
    rerun = plan_night(
        config, day2, out, out.join("a3"), feedback, published={"experiment": night2.manifest_record()}
    )
    assert rerun.source == "published" and rerun.allocation == alloc
    assert rerun.assign_args == {"experiment_id": "voice_1", "holdout": 0.05, "layout": alloc["layout"]}
    from factory.experiments.night import allocation_history

    assert allocation_history(out, "spring", "voice_1", day2) == [night1.allocation, alloc]
    assert allocation_history(out, "spring", "voice_1", day1) == [night1.allocation]
    dry = plan_night(config, dt.date(2026, 12, 3), out, out.join("a9"), feedback, pin=False)
    assert dry.allocation["continues"] == "2026-12-02_spring" and not (tmp_path / "nightly" / "a9").exists()
    # A campaign file whose arm now means something else: refused before anything runs.
    changed = _campaign(tmp_path, EXPERIMENT.replace("short and crisp", "loud"))
    with pytest.raises(UsageError, match="arm 'crisp' of experiment 'voice_1' now means something else"):
        plan_night(changed, dt.date(2026, 12, 3), out, out.join("a4"), feedback)
    # A table that is not the one its summary names: refused, not used quietly.
    (tmp_path / "feedback" / "feedback.parquet").write_bytes(b"garbage")
    with pytest.raises(UsageError, match="cannot use the feedback table"):
        plan_night(config, dt.date(2026, 12, 3), out, out.join("a5"), feedback)

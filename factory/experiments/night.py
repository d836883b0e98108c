"""One night of an experiment, decided before any row is read: the seam the
nightly run calls.

    night = plan_night(campaign, run_date, output, attempt_base, feedback=loc)   # before Ray starts
    AssignArms(**night.assign_args)            # the Ray Data stage, after JoinProfiles
    manifest["experiment"] = night.manifest_record()

What it does, in order:

1. The previous published night of the campaign (strictly before this run
   date, so a rerun of an old night never looks at a later one): its
   declaration is held against the campaign file (``check_unchanged``: an arm
   that now means something else is a UsageError, exit 2, before Ray), and
   its allocation's layout is the one this night rebalances.
2. This night's allocation: if this attempt already pinned one (a resumed
   process) it is used as it is; if the run was published before (a
   ``--force`` rerun) the published night's allocation is used as it is;
   otherwise it is computed from the feedback table (``bandit.allocate``) and
   pinned into the attempt (``experiment_allocation.json``, written
   exclusively) before any row is assigned. So every process that works on a
   night, and every rerun of it, assigns every user exactly as the first did,
   even when the feedback table has moved on since.
3. A feedback table that is missing is not an error: the allocation says so
   (``feedback: null``) and uses the declared shares. One that is unreadable
   or not the table its summary names is (exit 2): an allocation from the
   wrong numbers must not go out quietly.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Optional

from factory.errors import UsageError
from factory.experiments.bandit import allocate, arm_stats, previous_allocation
from factory.experiments.config import check_unchanged, manifest_record
from factory.storage import AlreadyExists, Location, put_bytes, read_bytes

PINNED = "experiment_allocation.json"
HOLDOUT_DIR = "holdout"  # the attempt's holdout files: files.holdout in the manifest


@dataclass
class NightPlan:
    declaration: dict[str, Any]
    allocation: dict[str, Any]
    source: str  # "computed", "pinned" (a resumed attempt) or "published" (a rerun of a published night)

    @property
    def assign_args(self) -> dict[str, Any]:
        """The AssignArms stage's arguments."""
        return {
            "experiment_id": self.allocation["experiment_id"],
            "holdout": self.allocation["holdout"],
            "layout": self.allocation["layout"],
        }

    def manifest_record(self) -> dict[str, Any]:
        """The manifest's ``experiment``: what was declared, how traffic was shared and why."""
        return {
            "experiment_id": self.declaration["experiment_id"],
            "declaration": self.declaration,
            "allocation": self.allocation,
            "allocation_source": self.source,
            "holdout_files": HOLDOUT_DIR + "/",
        }


def previous_manifest(output: Location, campaign: str, run_date: dt.date) -> Optional[dict[str, Any]]:
    """The newest published manifest of ``campaign`` with a run date before ``run_date``."""
    from factory.experiments.feedback import child_folders
    from factory.publish import published_manifest

    days = [
        (d, loc)
        for d, loc in child_folders(output.join("runs"), "date=")
        if _is_date(d) and d < run_date.isoformat()
    ]
    for _, day in sorted(days, reverse=True):
        manifest = published_manifest(day.join(f"campaign={campaign}"))
        if manifest is not None:
            return manifest
    return None


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
        return True
    except ValueError:
        return False


def _feedback_stats(feedback: Optional[Location], campaign: str, experiment_id: str):
    from factory.experiments.table import SUMMARY, read_feedback

    if feedback is None:
        return {}, None
    try:
        table, summary = read_feedback(feedback)
    except FileNotFoundError:
        return {}, None
    except (ValueError, KeyError, OSError) as exc:
        raise UsageError(
            f"--feedback {feedback.uri}: cannot use the feedback table: {exc}",
            "rerun jobs/ingest_feedback.py, or leave --feedback out to use the declared shares",
        ) from None
    source = {
        "uri": feedback.join(SUMMARY).uri,
        "sha256": summary["table"]["sha256"],
        "written_at": summary.get("written_at"),
        "events_counted": summary.get("events", {}).get("counted"),
    }
    return arm_stats(table, campaign, experiment_id), source


def plan_night(
    campaign,
    run_date: dt.date,
    output: Location,
    attempt_base: Location,
    feedback: Optional[Location] = None,
    published: Optional[dict[str, Any]] = None,
    where: Optional[str] = None,
    pin: bool = True,
) -> NightPlan:
    """This night's experiment plan for ``campaign`` (a CampaignConfig with an
    experiment). ``attempt_base``: the attempt's prefix; ``published``: this
    run's published manifest, when a ``--force`` rerun replaces it; ``pin``
    False (the dry run) computes the plan and writes nothing."""
    experiment = campaign.experiment
    definitions = campaign.arm_definitions
    declaration = manifest_record(experiment, definitions)
    before = previous_manifest(output, campaign.campaign_id, run_date)
    problems = check_unchanged(
        ((before or {}).get("experiment") or {}).get("declaration"),
        experiment,
        definitions,
        where or f"campaign {campaign.campaign_id}: experiment",
    )
    if problems:
        raise UsageError(*problems)
    pinned_loc = attempt_base.join(PINNED)
    try:
        return NightPlan(declaration, json.loads(read_bytes(pinned_loc)), "pinned")
    except FileNotFoundError:
        pass
    same = ((published or {}).get("experiment") or {}).get("allocation")
    if same and same.get("experiment_id") == experiment.experiment_id:
        record, source = dict(same), "published"
    else:
        stats, fed = _feedback_stats(feedback, campaign.campaign_id, experiment.experiment_id)
        record = allocate(experiment, run_date, stats, previous_allocation(before), fed).record()
        source = "computed"
    if not pin:
        return NightPlan(declaration, record, source)
    try:
        put_bytes(
            pinned_loc, json.dumps(record, indent=2).encode(), exclusive=True, content_type="application/json"
        )
    except AlreadyExists:  # another process of this attempt pinned first: use theirs
        return NightPlan(declaration, json.loads(read_bytes(pinned_loc)), "pinned")
    return NightPlan(declaration, record, source)


def allocation_history(
    output: Location, campaign: str, experiment_id: str, up_to: dt.date
) -> list[dict[str, Any]]:
    """The allocation records of ``experiment_id`` in the campaign's published
    nights up to ``up_to`` (manifests only): the report's night-by-night chart."""
    from factory.experiments.feedback import child_folders
    from factory.publish import published_manifest

    out = []
    for day, loc in child_folders(output.join("runs"), "date="):
        if not _is_date(day) or day > up_to.isoformat():
            continue
        record = ((published_manifest(loc.join(f"campaign={campaign}")) or {}).get("experiment") or {}).get(
            "allocation"
        )
        if record and record.get("experiment_id") == experiment_id:
            out.append(record)
    return out

"""Backfill: regenerate a campaign for past dates by running the nightly job once per date.

    python jobs/backfill_campaign.py --campaign winter_sale --start 2026-11-01 --end 2026-11-07 \
        -- --output s3://marketing-copy/nightly --pairs ... --users ... --products ...

Three parts, each with one job:

    plan_dates()    which dates (a range or a list), validated before anything runs
    Backfill        the per-date command line and the run each date writes; every date's
                    arguments go through the nightly job's own parser first, so a setting
                    the job would refuse stops the backfill with exit 2 before any engine
    Executor        one ``nightly_copy.py`` subprocess per date, at most ``concurrency`` at a
                    time; a date whose run is already published (``choose_attempt`` says
                    "published") is reported as skipped without starting anything

Each date is its own process so that one date's crash cannot take the others
down; the nightly job's exit codes are the contract (0 published or already
published, 1 crash, 2 bad config/input, 3 publish conflict, 4 incomplete run).
Idempotent like the nightly job: rerun the same backfill and published dates are
skipped while a date that failed midway resumes its unfinished attempt.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TextIO

from pydantic import BaseModel, ConfigDict, Field

from factory.errors import UsageError
from factory.storage import Location

REPO = Path(__file__).resolve().parents[1]
NIGHTLY_JOB = REPO / "jobs" / "nightly_copy.py"
DEFAULT_MAX_DATES = 366
DEFAULT_GRACE_SECONDS = 60.0
SUBSET_MARK = ".subset-"
_NAME_MAX = 64  # the nightly job's limit on a campaign or run label
TAIL_LINES = 20  # last lines of a child's output kept for the summary of a failed date

# Statuses in the summary (the JSON's "status"; the table says more, e.g. the exit code).
PUBLISHED, SKIPPED, FAILED, INTERRUPTED, NOT_RUN, DRY_RUN = (
    "published",
    "skipped",
    "failed",
    "interrupted",
    "not_run",
    "dry_run",
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Flags the backfill sets itself for each date; giving them to be passed through is a mistake.
_RESERVED = {"--run-date": "the backfill sets --run-date for each date (use --start/--end or --dates)"}
# Environment variables whose values are never printed (a child could echo them).
_SECRET_ENV = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|_KEY$|_KEY_ID$|AUTH", re.I)
_SECRET_MIN_LEN = 8  # shorter values would redact ordinary words


class PlanError(UsageError):
    """A backfill that cannot run as asked; raised before any date starts (exit 2)."""


# --------------------------------------------------------------------------- planning


def parse_date(text: str, flag: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise PlanError(f"{flag}: {text!r} is not a date (expected YYYY-MM-DD)") from None


def plan_dates(
    start: Optional[str] = None,
    end: Optional[str] = None,
    dates: Optional[str] = None,
    *,
    today: dt.date,
    max_dates: int = DEFAULT_MAX_DATES,
    allow_future: bool = False,
) -> list[dt.date]:
    """The dates to run, oldest first: ``start``..``end`` inclusive, or a comma list."""
    if dates is not None and (start is not None or end is not None):
        raise PlanError("give either --start/--end or --dates, not both")
    if dates is not None:
        days = sorted({parse_date(d, "--dates") for d in dates.split(",") if d.strip()})
        if not days:
            raise PlanError("--dates: the list is empty")
    elif start is None or end is None:
        raise PlanError("give --start and --end (inclusive), or --dates")
    else:
        first, last = parse_date(start, "--start"), parse_date(end, "--end")
        if last < first:
            raise PlanError(f"--end {last} is before --start {first}")
        count = (last - first).days + 1
        if count > max_dates:  # checked before building a list of a million dates
            raise PlanError(f"{count} dates from {first} to {last}: more than --max-dates {max_dates}")
        days = [first + dt.timedelta(days=i) for i in range(count)]
    if len(days) > max_dates:
        raise PlanError(f"{len(days)} dates: more than --max-dates {max_dates}")
    future = [d for d in days if d > today]
    if future and not allow_future:
        raise PlanError(
            f"{future[0]} is after today ({today}); {len(future)} future date(s). "
            "Pass --allow-future to run them anyway"
        )
    return days


def subset_label(base: str, user_ids: Optional[Sequence[str]], product_ids: Optional[Sequence[str]]) -> str:
    """``<base>.subset-<8 hex>``: the same id lists (any order, any repeats) give the same
    label, so a subset backfill never lands on the nightly run of a date, and its rerun
    finds its own runs again."""
    canonical = json.dumps(
        {
            "users": sorted(set(user_ids)) if user_ids is not None else None,
            "products": sorted(set(product_ids)) if product_ids is not None else None,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    return f"{base[: _NAME_MAX - len(SUBSET_MARK) - 8]}{SUBSET_MARK}{digest}"


def _ids(value: Optional[str], flag: str) -> Optional[list[str]]:
    from factory.config import split_ids  # the nightly job's own reading of a comma list or @file

    if value is None:
        return None
    try:
        ids = split_ids(value)
    except ValueError as exc:
        raise PlanError(f"{flag}: {exc}") from None
    if not ids:
        raise PlanError(f"{flag}: the list is empty")
    return ids


@dataclass(frozen=True)
class Target:
    """The run one date writes, as the nightly job itself resolves it."""

    run_id: str
    run: Location  # runs/date=D/campaign=<label>


@dataclass(frozen=True)
class Backfill:
    """What to run: the dates and the nightly job's arguments for each of them."""

    dates: tuple[dt.date, ...]
    campaign: Optional[str] = None
    run_label: Optional[str] = None
    only_users: Optional[str] = None  # passed through as given: a comma list or @file
    only_products: Optional[str] = None
    force: bool = False
    passthrough: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.run_label or self.campaign or "all"

    @property
    def dry_run(self) -> bool:
        return "--dry-run" in self.passthrough

    def job_args(self, day: dt.date) -> list[str]:
        """The nightly job's arguments for one date (after the script)."""
        args = ["--run-date", day.isoformat()]
        if self.campaign:
            args += ["--campaign", self.campaign]
        if self.run_label:
            args += ["--run-label", self.run_label]
        if self.only_users is not None:
            args += ["--only-users", self.only_users]
        if self.only_products is not None:
            args += ["--only-products", self.only_products]
        if self.force:
            args.append("--force")
        return args + list(self.passthrough)

    def target(self, day: dt.date) -> Target:
        """Parse the date's arguments with the nightly job's parser: the output, S3 settings
        and run label the child will use (a config file or campaign config included)."""
        from pydantic import ValidationError

        from factory.cli import parse_job
        from factory.reader import run_location
        from factory.storage import resolve

        try:
            configs = parse_job(self.job_args(day)).configs
        except SystemExit:  # argparse has printed the nightly job's own message
            raise PlanError("the nightly job refuses these arguments (its message is above)") from None
        except ValidationError as exc:
            raise PlanError(f"invalid configuration for the nightly job on {day}:\n{exc}") from None
        except (ValueError, OSError) as exc:
            raise PlanError(f"invalid configuration for the nightly job on {day}: {exc}") from None
        if len(configs) != 1:  # e.g. --campaigns-dir without --campaign: every active campaign
            names = ", ".join(c.campaign_label for c in configs) or "none"
            raise PlanError(
                f"{day}: the nightly job would make {len(configs)} runs ({names}); a backfill "
                "regenerates one campaign: name it with --campaign"
            )
        config = configs[0]
        output = resolve(config.output, **config.storage_options())
        return Target(config.run_id, run_location(output, config.run_date, config.campaign_label))


def build_backfill(
    dates: Sequence[dt.date],
    *,
    campaign: Optional[str] = None,
    run_label: Optional[str] = None,
    only_users: Optional[str] = None,
    only_products: Optional[str] = None,
    force: bool = False,
    passthrough: Sequence[str] = (),
) -> Backfill:
    """A Backfill with the subset label derived when ids are given and no label is."""
    for arg in passthrough:
        flag = arg.split("=", 1)[0]
        if flag in _RESERVED:
            raise PlanError(_RESERVED[flag])
        if flag in ("--campaign", "--run-label", "--only-users", "--only-products", "--force"):
            raise PlanError(f"{flag} is a backfill option: put it before '--'")
    users, products = _ids(only_users, "--only-users"), _ids(only_products, "--only-products")
    if run_label is None and (users is not None or products is not None):
        run_label = subset_label(campaign or "all", users, products)
    return Backfill(tuple(dates), campaign, run_label, only_users, only_products, force, tuple(passthrough))


# --------------------------------------------------------------------------- running


class Redactor:
    """Replaces the values of secret-looking environment variables with ***."""

    def __init__(self, env: Optional[dict[str, str]] = None):
        env = os.environ if env is None else env
        self._secrets = sorted(
            {v for k, v in env.items() if _SECRET_ENV.search(k) and len(v) >= _SECRET_MIN_LEN},
            key=len,
            reverse=True,
        )

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


@dataclass
class DateResult:
    date: str
    status: str
    run_id: Optional[str] = None
    exit_code: Optional[int] = None
    rows: Optional[int] = None
    attempt: Optional[int] = None
    seconds: Optional[float] = None
    manifest: Optional[str] = None
    error: Optional[str] = None
    tail: list[str] = field(default_factory=list)

    @property
    def detail(self) -> str:
        if self.status == SKIPPED:
            return "skipped (already published)"
        if self.status == FAILED:
            return (
                f"failed (exit {self.exit_code})" if self.exit_code else f"failed ({self.error or 'see log'})"
            )
        if self.status == INTERRUPTED:
            return "interrupted"
        if self.status == NOT_RUN:
            return "not run (stopped)"
        if self.status == DRY_RUN:
            return "dry run (exit 0)"
        return self.status


@dataclass
class _Child:
    proc: subprocess.Popen
    started: float
    target: Target
    tail: collections.deque
    pump: threading.Thread


def _read_published(target: Target) -> tuple[Optional[int], Optional[int], Optional[str]]:
    """(rows, attempt, manifest uri) of the run's newest published attempt, or Nones."""
    from factory.publish import Attempt, published_manifest

    manifest = published_manifest(target.run)
    if manifest is None:
        return None, None, None
    attempt = int(manifest["attempt"])
    rows = (manifest.get("rows") or {}).get("copies")
    return rows, attempt, Attempt(target.run, attempt).manifest.uri


class Executor:
    """Runs the dates of a Backfill, at most ``concurrency`` child processes at a time."""

    def __init__(
        self,
        backfill: Backfill,
        job_command: Optional[Sequence[str]] = None,
        *,
        concurrency: int = 1,
        out: TextIO = sys.stdout,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        poll_seconds: float = 0.2,
        targets: Optional[dict[dt.date, Target]] = None,
    ):
        if concurrency < 1:
            raise PlanError(f"--concurrency must be at least 1, not {concurrency}")
        self.backfill = backfill
        self.job_command = list(job_command or [sys.executable, str(NIGHTLY_JOB)])
        self.concurrency = concurrency
        self.out = out
        self.grace_seconds = grace_seconds
        self.poll_seconds = poll_seconds
        self.targets = dict(targets or {})
        self.redact = Redactor()
        self._lock = threading.Lock()
        self._stop_requested: Optional[str] = None
        self._kill_now = False

    # -- control (safe to call from a signal handler: it only sets flags)

    def stop(self, reason: str) -> None:
        """Launch nothing more and terminate running children (a second call kills them)."""
        if self._stop_requested is not None:
            self._kill_now = True
        self._stop_requested = reason

    @property
    def stopped(self) -> Optional[str]:
        return self._stop_requested

    # -- output

    def say(self, line: str) -> None:
        with self._lock:
            self.out.write(self.redact(line) + "\n")
            self.out.flush()

    def command(self, day: dt.date) -> list[str]:
        return self.job_command + self.backfill.job_args(day)

    # -- the loop

    def run(self) -> list[DateResult]:
        pending = collections.deque(self.backfill.dates)
        running: dict[dt.date, _Child] = {}
        results: dict[dt.date, DateResult] = {}
        term_sent_at: Optional[float] = None
        killed = False
        while running or (pending and self._stop_requested is None):
            while pending and self._stop_requested is None and len(running) < self.concurrency:
                day = pending.popleft()
                target = self._target(day)
                done = self._check(day, target)
                if done is not None:
                    results[day] = done
                else:
                    running[day] = self._launch(day, target)
            for day, child in list(running.items()):
                if child.proc.poll() is not None:
                    results[day] = self._finish(day, child, interrupted=self._stop_requested is not None)
                    del running[day]
            if self._stop_requested is not None and running:
                if term_sent_at is None:
                    self.say(
                        f"[backfill] stopping ({self._stop_requested}): terminating {len(running)} running "
                        f"date(s), launching no more"
                    )
                    for child in running.values():
                        _signal_group(child.proc, signal.SIGTERM)
                    term_sent_at = time.monotonic()
                elif not killed and (self._kill_now or time.monotonic() - term_sent_at > self.grace_seconds):
                    for child in running.values():
                        _signal_group(child.proc, signal.SIGKILL)
                    killed = True
            time.sleep(self.poll_seconds)
        for day in pending:
            results[day] = DateResult(day.isoformat(), NOT_RUN)
        return [results[d] for d in self.backfill.dates]

    def _target(self, day: dt.date) -> Target:
        if day not in self.targets:
            self.targets[day] = self.backfill.target(day)
        return self.targets[day]

    def _check(self, day: dt.date, target: Target) -> Optional[DateResult]:
        """A result without running anything (already published, or the state is unreadable),
        or None: launch. "Published" means what the nightly job would conclude too."""
        from factory.publish import choose_attempt

        if self.backfill.force:
            return None
        try:
            state = choose_attempt(target.run)
            if state.action != "published" or not state.finished:  # the job finishes a stopped publish
                return None
            rows, attempt, manifest = _read_published(target)
        except Exception as exc:  # noqa: BLE001 - storage errors after the client's retries: this date only
            self.say(f"[{day}] cannot read the run's state at {target.run.uri}: {exc}")
            return DateResult(day.isoformat(), FAILED, target.run_id, error=f"state unreadable: {exc}")
        self.say(f"[{day}] skipped: {target.run_id} is already published (attempt {attempt}, {rows} rows)")
        return DateResult(
            day.isoformat(),
            SKIPPED,
            target.run_id,
            rows=rows,
            attempt=attempt,
            manifest=manifest,
            seconds=0.0,
        )

    def _launch(self, day: dt.date, target: Target) -> _Child:
        cmd = self.command(day)
        self.say(f"[{day}] starting: {' '.join(cmd)}")
        env = dict(os.environ)
        # The child imports the same factory package as this process.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")  # lines reach the log as they happen
        # Own session: a Ctrl-C in the terminal reaches the backfill, which decides what the
        # children get; and a signal to the group reaches a child's local Ray and engine too.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            text=True,
            errors="replace",
            bufsize=1,
        )
        tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
        pump = threading.Thread(target=self._pump, args=(day, proc, tail), daemon=True)
        pump.start()
        return _Child(proc, time.monotonic(), target, tail, pump)

    def _pump(self, day: dt.date, proc: subprocess.Popen, tail: collections.deque) -> None:
        for line in proc.stdout:
            line = self.redact(line.rstrip("\n"))
            tail.append(line)
            self.say(f"[{day}] {line}")
        proc.stdout.close()

    def _finish(self, day: dt.date, child: _Child, interrupted: bool) -> DateResult:
        child.pump.join(timeout=30)
        code = child.proc.returncode
        result = DateResult(
            day.isoformat(),
            FAILED,
            child.target.run_id,
            exit_code=code,
            seconds=round(time.monotonic() - child.started, 1),
            tail=list(child.tail),
        )
        if code == 0 and self.backfill.dry_run:
            result.status = DRY_RUN
        elif code == 0:
            try:
                result.rows, result.attempt, result.manifest = _read_published(child.target)
            except Exception as exc:  # noqa: BLE001 - any read failure fails this date only, not the backfill
                result.error = f"exit 0 but the manifest is unreadable: {exc}"
            else:
                if result.manifest:
                    result.status = PUBLISHED
                else:  # the job's contract says exit 0 means published
                    result.error = "exit 0 but no published manifest"
        elif interrupted:
            result.status = INTERRUPTED
        self.say(
            f"[{day}] {result.detail} after {result.seconds:.0f} s"
            + (f": {result.error}" if result.error else "")
        )
        return result


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------------------- summary


def summarize(
    backfill: Backfill,
    results: Sequence[DateResult],
    *,
    started_at: str,
    seconds: float,
    concurrency: int,
    stopped: Optional[str],
) -> dict[str, Any]:
    counts = collections.Counter(r.status for r in results)
    return {
        "campaign": backfill.campaign,
        "run_label": backfill.label,
        "force": backfill.force,
        "concurrency": concurrency,
        "started_at": started_at,
        "seconds": round(seconds, 1),
        "stopped": stopped,
        "counts": {s: counts.get(s, 0) for s in (PUBLISHED, SKIPPED, FAILED, INTERRUPTED, NOT_RUN, DRY_RUN)},
        "exit_code": exit_code(results, stopped),
        "dates": [dataclasses.asdict(r) for r in results],
    }


def exit_code(results: Sequence[DateResult], stopped: Optional[str]) -> int:
    if stopped is not None:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r.status in (PUBLISHED, SKIPPED, DRY_RUN) for r in results) else EXIT_FAILED


_ERROR_LINE = re.compile(r"^(error: |[\w.]*(Error|Exception)\b)")


def _reason(tail: Sequence[str]) -> str:
    """The child's last error line (the job prints ``error: ...``; a crash ends in an
    exception line), else its last line."""
    return next(
        (line for line in reversed(tail) if _ERROR_LINE.match(line)), tail[-1] if tail else "no output"
    )


def format_table(summary: dict[str, Any]) -> str:
    rows = [("date", "status", "rows", "seconds", "manifest")]
    for r in summary["dates"]:
        rows.append(
            (
                r["date"],
                DateResult(**r).detail,
                "" if r["rows"] is None else str(r["rows"]),
                "" if r["seconds"] is None else f"{r['seconds']:.0f}",
                r["manifest"] or "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(
            [*(row[i].ljust(widths[i]) if i != 2 else row[i].rjust(widths[i]) for i in range(4)), row[4]]
        ).rstrip()
        for row in rows
    ]
    c = summary["counts"]
    head = (
        f"Backfill of {summary['run_label']}: {len(summary['dates'])} date(s), {c[PUBLISHED]} published, "
        f"{c[SKIPPED]} skipped (already published), {c[FAILED]} failed"
        + (
            f", {c[INTERRUPTED]} interrupted, {c[NOT_RUN]} not run ({summary['stopped']})"
            if summary["stopped"]
            else ""
        )
        + f" in {summary['seconds']:.0f} s"
    )
    failed = [r for r in summary["dates"] if r["status"] in (FAILED, INTERRUPTED)]
    notes = [f"  {r['date']}: {r['error'] or _reason(r['tail'])}" for r in failed]
    return "\n".join(
        [head, *lines] + (["failed dates (rerun the same command to resume them):", *notes] if notes else [])
    )


# --------------------------------------------------------------------------- the job's settings


class BackfillJobConfig(BaseModel):
    """The backfill's own settings (jobs/backfill_campaign.py makes each a flag); every
    other argument goes to the nightly job unchanged."""

    model_config = ConfigDict(extra="forbid")

    start: Optional[str] = Field(default=None, description="First date, YYYY-MM-DD (inclusive).")
    end: Optional[str] = Field(default=None, description="Last date, YYYY-MM-DD (inclusive).")
    dates: Optional[str] = Field(default=None, description="Comma list of dates instead of --start/--end.")
    max_dates: int = Field(
        default=DEFAULT_MAX_DATES, description=f"Refuse more dates than this (default {DEFAULT_MAX_DATES})."
    )
    allow_future: bool = Field(default=False, description="Allow dates after today.")
    campaign: Optional[str] = Field(
        default=None, description="The campaign (default: every pair, run labelled 'all')."
    )
    only_users: Optional[str] = Field(
        default=None, description="Only these users: comma list or @file (one id per line)."
    )
    only_products: Optional[str] = Field(
        default=None, description="Only these products: comma list or @file (one id per line)."
    )
    run_label: Optional[str] = Field(
        default=None,
        description="Name of the runs instead of the campaign. Default with --only-users/"
        "--only-products: <campaign>.subset-<8 hex of the ids' sha256>, so a subset never lands on "
        "the nightly run of a date.",
    )
    force: bool = Field(
        default=False,
        description="Regenerate published dates too, each as a new attempt (passed to every date).",
    )
    concurrency: int = Field(
        default=1,
        description="Dates run at the same time (default 1). On one machine each run starts its own local "
        "Ray and engine, so more than one needs the memory and cores for that; on a Ray cluster set "
        "RAY_ADDRESS and every run attaches to the same cluster, sharing its engines' capacity.",
    )
    summary_json: Optional[str] = Field(
        default=None, description="Also write the summary as JSON to this local file."
    )
    grace_seconds: float = Field(
        default=DEFAULT_GRACE_SECONDS,
        description="After Ctrl-C/SIGTERM, how long running dates get to stop before they are killed "
        f"(default {DEFAULT_GRACE_SECONDS:.0f}).",
    )


# --------------------------------------------------------------------------- the library call


def run(
    config: BackfillJobConfig,
    passthrough: Sequence[str] = (),
    *,
    job_command: Optional[Sequence[str]] = None,
    today: Optional[dt.date] = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run every date of the backfill ``config`` asks for; ``passthrough`` goes to each
    date's nightly job. Returns the exit status (0, 1 or 130); raises PlanError (exit 2)
    before any date starts."""
    dates = plan_dates(
        config.start,
        config.end,
        config.dates,
        today=today or dt.date.today(),
        max_dates=config.max_dates,
        allow_future=config.allow_future,
    )
    backfill = build_backfill(
        dates,
        campaign=config.campaign,
        run_label=config.run_label,
        only_users=config.only_users,
        only_products=config.only_products,
        force=config.force,
        passthrough=passthrough,
    )
    # Every date's arguments through the nightly job's own checks, before any date runs.
    targets = {d: backfill.target(d) for d in dates}
    executor = Executor(
        backfill,
        job_command,
        concurrency=config.concurrency,
        out=out,
        grace_seconds=config.grace_seconds,
        targets=targets,
    )
    first = targets[dates[0]]
    executor.say(
        f"[backfill] {len(dates)} date(s) {dates[0]}..{dates[-1]} of run label {backfill.label} "
        f"under {first.run.uri.rsplit('/runs/', 1)[0]}, concurrency {config.concurrency}"
        + (", --force" if backfill.force else "")
    )

    def on_signal(signum, _frame):
        executor.stop(signal.Signals(signum).name)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started_at = dt.datetime.now(dt.timezone.utc).isoformat()
    t0 = time.monotonic()
    try:
        results = executor.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    summary = summarize(
        backfill,
        results,
        started_at=started_at,
        seconds=time.monotonic() - t0,
        concurrency=config.concurrency,
        stopped=executor.stopped,
    )
    executor.say("\n" + format_table(summary))
    if config.summary_json:
        path = Path(config.summary_json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(executor.redact(json.dumps(summary, indent=2)) + "\n")
        executor.say(f"[backfill] summary written to {path}")
    return summary["exit_code"]

"""Attempts, manifests and the latest pointer: how a run becomes visible.

The output layout and the reader's contract: docs/output.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow.fs as pafs

from factory.errors import Conflict
from factory.storage import AlreadyExists, Location, put_bytes, read_bytes

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
SUMMARY = "summary.json"
# The manifest's "format": bumped when what a reader sees changes.
#   @2 (2026-12-04): the copies' "attempt" column is "draft" (and
#      "first_attempt_reasons" is "first_draft_reasons"): "attempt" names
#      only the run's attempt, whose number the manifest's "attempt" keeps.
MANIFEST_FORMAT = "copy-factory/manifest@2"
_ATTEMPT_PREFIX = "attempt="


class PublishConflict(Conflict):
    """Another writer published this attempt first; nothing of ours was published."""


@dataclass(frozen=True)
class Attempt:
    """The prefixes of one attempt of one run."""

    run: Location  # runs/date=D/campaign=C
    number: int

    @property
    def base(self) -> Location:
        return self.run.join(f"{_ATTEMPT_PREFIX}{self.number:04d}")

    @property
    def copies(self) -> Location:
        return self.base.join("copies")

    @property
    def dead_letters(self) -> Location:
        return self.base.join("dead_letters")

    @property
    def review(self) -> Location:
        return self.base.join("review")

    @property
    def repair_queue(self) -> Location:
        return self.base.join("_work", "repair")

    @property
    def checked(self) -> Location:
        """Pass 1's servable pairs, with their file and row: what staging reads."""
        return self.base.join("_work", "checked")

    @property
    def pairs(self) -> Location:
        """The staged rows the generation passes read (one per distinct prompt)."""
        return self.base.join("_work", "pairs")

    @property
    def followers(self) -> Location:
        """Rows whose prompt equals an earlier row's: they reuse its copy."""
        return self.base.join("_work", "followers")

    @property
    def work(self) -> Location:
        return self.base.join("_work")

    @property
    def processes(self) -> Location:
        return self.base.join("_processes")

    @property
    def manifest(self) -> Location:
        return self.base.join(MANIFEST)


@dataclass(frozen=True)
class RunState:
    attempt: Attempt
    action: str  # "new", "resume" or "published"
    published: Optional[Attempt] = None  # the newest published attempt, if any
    # "published" only: its _SUCCESS is there, the last step of publishing
    # (factory.pipeline.publishing.finish_publishing); False: a rerun finishes it.
    finished: bool = True


def abandoned_attempts(run: Location, current: int) -> list[dict[str, Any]]:
    """Earlier attempts that never published (given up with --force): their
    files are orphans no reader sees. Listed in the next manifest so an
    operator can see and delete them."""
    from factory.storage import list_files

    out = []
    for n in _attempt_numbers(run):
        attempt = Attempt(run, n)
        if n >= current or _exists(attempt.manifest):
            continue
        files = list_files(attempt.base)
        out.append(
            {
                "attempt": n,
                "prefix": f"{_ATTEMPT_PREFIX}{n:04d}/",
                "files": len(files),
                "bytes": sum(f.size or 0 for f in files),
            }
        )
    return out


def _attempt_numbers(run: Location) -> list[int]:
    try:
        infos = run.fs.get_file_info(pafs.FileSelector(run.path, allow_not_found=True))
    except FileNotFoundError:
        return []
    numbers = []
    for info in infos:
        name = info.path.rstrip("/").rsplit("/", 1)[-1]
        if info.type == pafs.FileType.Directory and name.startswith(_ATTEMPT_PREFIX):
            try:
                numbers.append(int(name[len(_ATTEMPT_PREFIX) :]))
            except ValueError:
                continue
    return sorted(numbers)


def _exists(loc: Location) -> bool:
    return loc.fs.get_file_info(loc.path).type == pafs.FileType.File


def choose_attempt(run: Location, force: bool = False) -> RunState:
    """What this process should do with the run.

    new: no attempt yet, or ``force`` (a fresh attempt whatever came before);
    resume: the newest attempt has no manifest; published: nothing to do."""
    numbers = _attempt_numbers(run)
    published = next((Attempt(run, n) for n in reversed(numbers) if _exists(Attempt(run, n).manifest)), None)
    if force or not numbers:
        return RunState(Attempt(run, (numbers[-1] + 1) if numbers else 1), "new", published)
    newest = Attempt(run, numbers[-1])
    if not _exists(newest.manifest):
        return RunState(newest, "resume", published)
    return RunState(newest, "published", published, finished=_exists(newest.base.join(SUCCESS)))


def config_hash(config_json: str) -> str:
    canonical = json.dumps(json.loads(config_json), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def record_process(attempt: Attempt, action: str, extra: dict[str, Any]) -> Location:
    """One small JSON per process that works on an attempt: the manifest's history."""
    started = dt.datetime.now(dt.timezone.utc)
    name = f"{started.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.json"
    loc = attempt.processes.join(name)
    record = {
        "started_at": started.isoformat(),
        "action": action,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **extra,
    }
    put_bytes(loc, json.dumps(record, indent=2).encode(), content_type="application/json")
    return loc


def update_process(loc: Location, **fields: Any) -> None:
    record = json.loads(read_bytes(loc))
    record.update(fields)
    put_bytes(loc, json.dumps(record, indent=2).encode(), content_type="application/json")


def read_history(attempt: Attempt) -> list[dict[str, Any]]:
    infos = attempt.processes.fs.get_file_info(
        pafs.FileSelector(attempt.processes.path, allow_not_found=True)
    )
    records = []
    for info in sorted((i for i in infos if i.path.endswith(".json")), key=lambda i: i.path):
        records.append(json.loads(read_bytes(attempt.processes.join(info.path.rsplit("/", 1)[-1]))))
    return records


def publish(attempt: Attempt, manifest: dict[str, Any]) -> None:
    """Write the manifest exclusively: from then on the attempt is published
    (the latest pointer, then ``_SUCCESS``, follow it:
    ``factory.pipeline.publishing.finish_publishing``). Raises PublishConflict
    if another writer's manifest got there first."""
    body = json.dumps({"format": MANIFEST_FORMAT, **manifest}, indent=2, ensure_ascii=False).encode()
    try:
        put_bytes(attempt.manifest, body, exclusive=True, content_type="application/json")
    except AlreadyExists as exc:
        raise PublishConflict(
            f"{attempt.manifest.uri} already exists: another writer published attempt {attempt.number} first"
        ) from exc


def update_latest(output: Location, campaign: str, pointer: dict[str, Any]) -> bool:
    """Point ``latest/campaign=C.json`` at this run, unless it already points at
    a later run date (a backfill of an old date does not move it)."""
    loc = output.join("latest", f"campaign={campaign}.json")
    try:
        current = json.loads(read_bytes(loc))
    except FileNotFoundError:
        current = None
    if current and current.get("run_date", "") > pointer["run_date"]:
        return False
    put_bytes(loc, json.dumps(pointer, indent=2).encode(), content_type="application/json")
    return True


def published_manifest(run: Location) -> Optional[dict[str, Any]]:
    """The newest published attempt's manifest of a run, or None: what a reader trusts."""
    for n in reversed(_attempt_numbers(run)):
        try:
            return json.loads(read_bytes(Attempt(run, n).manifest))
        except FileNotFoundError:
            continue
    return None

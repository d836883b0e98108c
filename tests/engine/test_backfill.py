"""The backfill for real: jobs/backfill_campaign.py runs the real nightly job (real
Ray, the vLLM CPU engine, the bundled model) for three dates, output on moto's S3
over HTTP behind a proxy. The first date is already published (skipped, nothing
started); the second is generated and published; S3 goes away for good right after
the third date's first copies file is stored, so that date fails midway and the
backfill exits 1 with a summary saying so. The same command again resumes the third
date, skips the other two and exits 0; every row of the generated dates is
published exactly once."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.publish import Attempt
from factory.reader import read_published, run_location
from factory.storage import resolve
from tests.conftest import PYTHON, REPO, RUN_MARKER, S3_SECRET_KEY, job_env, reap
from tests.owed import publish_as_the_job_does
from tests.s3_faults import FaultyS3Proxy

pytestmark = pytest.mark.engine

BACKFILL = REPO / "jobs" / "backfill_campaign.py"
CAMPAIGN = "winter_sale"
CHANNELS = ["push", "sms"]
TODAY = dt.date.today()
D1, D2, D3 = ((TODAY - dt.timedelta(days=n)).isoformat() for n in (3, 2, 1))


class OutageAfterFirstCopy(FaultyS3Proxy):
    """Forwards everything until the first copies file of ``day`` is stored, then
    answers every request 503 (until ``outage`` is set back to False)."""

    def __init__(self, upstream: str, day: str):
        super().__init__(upstream)
        self.armed = True
        proxy, forward = self, self._server.RequestHandlerClass

        class Handler(forward):
            def _handle(self):
                super()._handle()
                path = unquote(self.path)
                if proxy.armed and self.command == "PUT" and f"date={day}/" in path and "/copies/" in path:
                    proxy.armed, proxy.outage = False, True

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server.RequestHandlerClass = Handler


def _inputs(sample_dir: Path, folder: Path, n: int) -> Counter:
    """n English winter_sale pairs (one per user and product) as a Parquet file; the rows they owe."""
    users = pq.read_table(sample_dir / "users.parquet")
    en = {u[C.USER_ID] for u in users.to_pylist() if u[C.LOCALE] != "zh-CN"}
    pairs, seen = [], set()
    for p in pq.read_table(sample_dir / "pairs.parquet").to_pylist():
        key = (p[C.USER_ID], p[C.PRODUCT_ID])
        if (
            p[C.CAMPAIGN_ID] == CAMPAIGN
            and p[C.USER_ID] in en
            and p[C.PRODUCT_ID] < "P09000"
            and key not in seen
        ):
            seen.add(key)
            pairs.append(p)
    pairs = pairs[:n]
    folder.mkdir()
    pq.write_table(
        pa.Table.from_pylist(pairs, schema=pq.read_schema(sample_dir / "pairs.parquet")),
        folder / "pairs.parquet",
    )
    return Counter(
        (p[C.USER_ID], p[C.PRODUCT_ID], ch, 0)
        for p in pairs
        for ch in ([p[C.CHANNEL]] if p[C.CHANNEL] else CHANNELS)
        if ch in CHANNELS
    )


def _keys(client, bucket: str, prefix: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_backfill_skips_published_fails_midway_and_the_rerun_completes(
    s3_server, s3_client, s3_bucket, sample_dir, tmp_path
):
    expected = _inputs(sample_dir, tmp_path / "in", 10)
    assert sum(expected.values()) >= 12
    out = f"s3://{s3_bucket}/nightly"
    # Date 1 was published before (by an earlier nightly run): a real manifest where the job puts one.
    run_1 = run_location(resolve(out, s3_server), D1, CAMPAIGN)
    publish_as_the_job_does(
        Attempt(run_1, 1),
        {
            "run_id": f"{D1}_{CAMPAIGN}",
            "run_date": D1,
            "campaign": CAMPAIGN,
            "attempt": 1,
            "rows": {"copies": 17, "dead_letters": 0, "review": 0},
            "files": {"copies": []},
        },
    )
    runs = f"nightly/runs/date={{}}/campaign={CAMPAIGN}/"
    before_1 = _keys(s3_client, s3_bucket, runs.format(D1))
    summary_path = tmp_path / "backfill.json"

    with OutageAfterFirstCopy(s3_server, D3) as proxy:
        cmd = [
            PYTHON,
            str(BACKFILL),
            "--campaign",
            CAMPAIGN,
            "--start",
            D1,
            "--end",
            D3,
            "--summary-json",
            str(summary_path),
            "--",
            "--pairs",
            str(tmp_path / "in" / "pairs.parquet"),
            "--users",
            str(sample_dir / "users.parquet"),
            "--products",
            str(sample_dir / "products.parquet"),
            "--output",
            out,
            "--s3-endpoint",
            proxy.url,
            "--channels",
            ",".join(CHANNELS),
            "--batch-size",
            "4",
            "--rows-per-file",
            "2",
            "--no-repair",
            "--s3-max-attempts",
            "2",
        ]

        def backfill(name: str) -> tuple[int, str, dict]:
            marker, log = uuid.uuid4().hex, tmp_path / f"{name}.log"
            started = time.time()
            try:
                with open(log, "w") as f:
                    rc = subprocess.run(
                        cmd,
                        cwd=REPO,
                        env=job_env(**{RUN_MARKER: marker}),
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        timeout=900,
                    ).returncode
            finally:
                reap(marker)
            print(f"{name}: exit {rc} in {time.time() - started:.0f} s")
            return rc, log.read_text(), json.loads(summary_path.read_text())

        rc, log, summary = backfill("first")
        assert rc == 1, log[-5000:]
        assert not proxy.armed  # the outage did happen, on date 3's copies
        status = {r["date"]: r for r in summary["dates"]}
        assert [r["date"] for r in summary["dates"]] == [D1, D2, D3]
        assert (status[D1]["status"], status[D1]["rows"], status[D1]["exit_code"]) == ("skipped", 17, None)
        assert (status[D2]["status"], status[D2]["exit_code"], status[D2]["rows"]) == (
            "published",
            0,
            sum(expected.values()),
        )
        assert status[D3]["status"] == "failed" and status[D3]["exit_code"] not in (0, None)
        assert status[D3]["rows"] is None and status[D3]["manifest"] is None
        assert summary["counts"]["failed"] == 1 and summary["exit_code"] == 1
        assert f"[{D1}] skipped" in log and f"[{D1}] starting" not in log  # nothing started for date 1
        assert f"failed (exit {status[D3]['exit_code']})" in log[log.index("Backfill of") :]
        # Date 3 stopped midway: some copies stored, no manifest.
        attempt_3 = runs.format(D3) + "attempt=0001/"
        copies_3 = [k for k in _keys(s3_client, s3_bucket, attempt_3 + "copies/") if k.endswith(".parquet")]
        assert copies_3 and not _keys(s3_client, s3_bucket, attempt_3 + "manifest.json")
        stored = {
            r[C.ROW_ID]: r[C.GENERATED_AT]
            for key in copies_3
            for r in pq.read_table(
                pa.BufferReader(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
            ).to_pylist()
        }

        proxy.outage = False  # S3 is back; the same command again
        rc, rerun_log, summary = backfill("rerun")
        assert rc == 0, rerun_log[-5000:]
        assert [(r["date"], r["status"]) for r in summary["dates"]] == [
            (D1, "skipped"),
            (D2, "skipped"),
            (D3, "published"),
        ]
        assert f"[{D2}] starting" not in rerun_log and f"[{D3}]   resumed:" in rerun_log

    for log_text in (log, rerun_log):
        assert S3_SECRET_KEY not in log_text
    # Date 1 untouched; dates 2 and 3: every row published exactly once, in one attempt each.
    assert _keys(s3_client, s3_bucket, runs.format(D1)) == before_1
    for day in (D2, D3):
        rows = read_published(out, day, CAMPAIGN, s3_endpoint=s3_server)
        got = Counter(zip(*(rows[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT))))
        assert got == expected, day
        assert len(set(rows[C.ROW_ID].to_pylist())) == rows.num_rows
        assert set(rows[C.RUN_ID].to_pylist()) == {f"{day}_{CAMPAIGN}"}
        assert not any("attempt=0002" in k for k in _keys(s3_client, s3_bucket, runs.format(day)))
    manifest_3 = json.loads(
        s3_client.get_object(Bucket=s3_bucket, Key=attempt_3 + "manifest.json")["Body"].read()
    )
    assert [h["action"] for h in manifest_3["history"]] == ["new", "resume"]
    assert 0 < manifest_3["history"][1]["rows_resumed"] < sum(expected.values())
    # The rows stored before the outage were kept, not generated again: same row, same timestamp.
    final = read_published(out, D3, CAMPAIGN, s3_endpoint=s3_server)
    final = dict(zip(final[C.ROW_ID].to_pylist(), final[C.GENERATED_AT].to_pylist()))
    assert stored and all(final[row_id] == at for row_id, at in stored.items())

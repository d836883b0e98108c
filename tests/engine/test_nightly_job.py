"""The nightly job end to end: real Ray, the real vLLM engine on the CPU with the
bundled model, inputs and outputs on a real S3 endpoint over HTTP (moto)."""

from __future__ import annotations

import io
import json
import subprocess
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory import sample_data
from factory.prompts import load_templates
from factory.reader import read_published
from factory.stages.finalize import OUTPUT_SCHEMA
from tests.conftest import JOB, PYTHON, REPO, S3_SECRET_KEY, job_env

pytestmark = pytest.mark.engine

RUN_CHANNELS = ["push", "sms", "ad_headline", "product_blurb"]
RUN_DATE = "2026-11-20"


def _put(client, bucket, key, table):
    buf = io.BytesIO()
    pq.write_table(table, buf)
    client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())


def _read_prefix(client, bucket, prefix) -> pa.Table:
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    tables = [
        pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()))
        for o in listing
        if o["Key"].endswith(".parquet")
    ]
    return pa.concat_tables(tables) if tables else None


def _expected_rows(pairs: list[dict], known_users: set, known_products: set) -> Counter:
    """Written independently of the join: one row per (pair, channel)."""
    expected = Counter()
    for p in pairs:
        if p[C.USER_ID] not in known_users or p[C.PRODUCT_ID] not in known_products:
            continue
        channels = [p[C.CHANNEL]] if p[C.CHANNEL] else RUN_CHANNELS
        for ch in channels:
            if ch in RUN_CHANNELS:
                expected[(p[C.USER_ID], p[C.PRODUCT_ID], ch, 0)] += 1
    return expected


def test_nightly_job_reads_and_writes_s3(s3_server, s3_client, s3_bucket, sample_dir, tmp_path):
    users = pq.read_table(sample_dir / "users.parquet")
    products = pq.read_table(sample_dir / "products.parquet")
    all_pairs = pq.read_table(sample_dir / "pairs.parquet").to_pylist()
    zh_users = {u[C.USER_ID] for u in users.to_pylist() if u[C.LOCALE] == "zh-CN"}
    hostile = sample_data.hostile_pairs(users.to_pylist(), products.to_pylist())
    regular = [p for p in all_pairs if p not in hostile]
    # Regular pairs in English and Chinese, and the hostile ones: instructions in
    # a description, a 20,000-character description, a trademark containing 最,
    # personal data in a profile.
    pairs = (
        [p for p in regular if p[C.USER_ID] not in zh_users][:16]
        + [p for p in regular if p[C.USER_ID] in zh_users][:5]
        + hostile
    )
    assert len(hostile) == 4 and all(h in all_pairs for h in hostile)
    # Two pairs the tables cannot serve: they must land in the dead letters, not stop the run.
    pairs += [
        {C.USER_ID: "U999999", C.PRODUCT_ID: "P00001", C.CHANNEL: None, C.CAMPAIGN_ID: "winter_sale"},
        {C.USER_ID: "U000001", C.PRODUCT_ID: "P99999", C.CHANNEL: "sms", C.CAMPAIGN_ID: "winter_sale"},
    ]
    # A user whose profile is another's, field for field (one segment): same
    # product, same channels, so the same prompts; generated once, reused.
    twin_of = pairs[0]
    original = next(u for u in users.to_pylist() if u[C.USER_ID] == twin_of[C.USER_ID])
    users = pa.concat_tables(
        [users, pa.Table.from_pylist([{**original, C.USER_ID: "U800001"}], schema=users.schema)]
    )
    pairs.append({**twin_of, C.USER_ID: "U800001"})
    pairs_table = pa.Table.from_pylist(pairs, schema=pq.read_schema(sample_dir / "pairs.parquet"))
    _put(s3_client, s3_bucket, "in/pairs/part-0.parquet", pairs_table)
    _put(s3_client, s3_bucket, "in/users.parquet", users)
    _put(s3_client, s3_bucket, "in/products.parquet", products)

    cmd = [
        PYTHON,
        str(JOB),
        "--pairs",
        f"s3://{s3_bucket}/in/pairs",
        "--users",
        f"s3://{s3_bucket}/in/users.parquet",
        "--products",
        f"s3://{s3_bucket}/in/products.parquet",
        "--output",
        f"s3://{s3_bucket}/factory",
        "--s3-endpoint",
        s3_server,
        "--run-date",
        RUN_DATE,
        "--channels",
        ",".join(RUN_CHANNELS),
        "--batch-size",
        "16",
        "--s3-sse",
        "AES256",
        # The model judge rides along: one run, no engine test of its own to start.
        "--judge",
    ]
    logs = tmp_path / "logs"
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        env=job_env(COPY_FACTORY_LOG_DIR=str(logs)),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "rows written" in proc.stdout and "sample copies" in proc.stdout

    partition = f"runs/date={RUN_DATE}/campaign=all/attempt=0001/"
    out = _read_prefix(s3_client, s3_bucket, f"factory/{partition}copies/")
    assert out is not None
    assert out.schema == OUTPUT_SCHEMA  # every column present and typed
    # What a reader following the contract sees (manifest, then its files) is exactly what was written.
    published = read_published(f"s3://{s3_bucket}/factory", RUN_DATE, s3_endpoint=s3_server)
    assert sorted(published[C.ROW_ID].to_pylist()) == sorted(out[C.ROW_ID].to_pylist())
    assert len(set(out[C.ROW_ID].to_pylist())) == out.num_rows

    expected = _expected_rows(
        pairs, set(users[C.USER_ID].to_pylist()), set(products[C.PRODUCT_ID].to_pylist())
    )
    got = Counter(zip(*(out[c].to_pylist() for c in (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT))))
    assert got == expected  # one row per (pair, channel): none lost, none twice
    assert len(expected) > 60

    rows = out.to_pylist()
    by_id = {r[C.ROW_ID]: r for r in rows}
    versions = {c: t.version for c, t in load_templates().items()}
    locales = dict(zip(users[C.USER_ID].to_pylist(), users[C.LOCALE].to_pylist()))
    for r in rows:
        assert r[C.TEXT].strip() or (r[C.STATUS] == C.REJECTED and "empty" in r[C.REASONS]), r
        assert r[C.TEMPLATE_VERSION] == versions[r[C.CHANNEL]]
        assert r[C.RUN_ID] == f"{RUN_DATE}_all" and r[C.RUN_DATE].isoformat() == RUN_DATE
        assert r[C.MODEL] == "SmolLM2-135M-Instruct"
        assert r[C.LOCALE] == locales[r[C.USER_ID]]
        if r[C.DEDUP_OF] is None:  # generated (a reusing row cost the engine nothing)
            assert r[C.NUM_INPUT_TOKENS] > 20 and r[C.NUM_OUTPUT_TOKENS] > 0
            assert 0 <= r[C.NUM_CACHED_TOKENS] < r[C.NUM_INPUT_TOKENS]  # the vLLM plugin reported it
        else:
            assert (
                by_id[r[C.DEDUP_OF]][C.DEDUP_OF] is None and by_id[r[C.DEDUP_OF]][C.CHANNEL] == r[C.CHANNEL]
            )
            assert r[C.NUM_OUTPUT_TOKENS] == 0
        assert r[C.FINISH_REASON] in ("stop", "length")
        assert r[C.CAMPAIGN_ID] in ("winter_sale", "new_arrivals")
    assert any(r[C.LOCALE] == "zh-CN" for r in rows)
    twins = [r for r in rows if r[C.USER_ID] == "U800001"]
    assert twins and all(r[C.DEDUP_OF] for r in twins)
    for r in twins:
        lead = by_id[r[C.DEDUP_OF]]
        assert (lead[C.USER_ID], lead[C.PRODUCT_ID], lead[C.CHANNEL]) == (
            twin_of[C.USER_ID],
            r[C.PRODUCT_ID],
            r[C.CHANNEL],
        )
        assert r[C.TEXT] == lead[C.TEXT] and r[C.DRAFT] == lead[C.DRAFT]
    _check_verdicts(rows)

    # Hostile rows did not stop the run, and each got its verdict.
    by_product = Counter(r[C.PRODUCT_ID] for r in rows)
    assert (
        by_product["P09001"] == 1 and by_product["P09002"] == 1 and by_product["P09003"] == len(RUN_CHANNELS)
    )
    pii_rows = [r for r in rows if r[C.USER_ID] == sample_data.HOSTILE_USER[C.USER_ID]]
    assert len(pii_rows) == len(RUN_CHANNELS)
    for r in rows:
        # The profile's e-mail and phone were scrubbed before the prompt, so no copy can hold them;
        # anything the description smuggled in that the model repeated was rejected.
        assert "jane.doe" not in r[C.TEXT] and "555 0142" not in r[C.TEXT]
        if "free-prize" in r[C.TEXT] or "555 0199" in r[C.TEXT]:
            assert r[C.STATUS] == C.REJECTED and {"url_from_source", "personal_data"} & set(r[C.REASONS]), r

    dead = _read_prefix(s3_client, s3_bucket, f"factory/{partition}dead_letters/")
    assert sorted(zip(dead[C.USER_ID].to_pylist(), dead[C.REASON].to_pylist())) == [
        ("U000001", "unknown_product_id"),
        ("U999999", "unknown_user_id"),
    ]
    # Each dead letter says where the pair came from: the file and the row in it.
    rows_in_file = {(p[C.USER_ID], p[C.PRODUCT_ID]): i for i, p in enumerate(pairs)}
    for d in dead.to_pylist():
        assert d[C.SOURCE] == f"s3://{s3_bucket}/in/pairs/part-0.parquet"
        assert d[C.SOURCE_ROW] == rows_in_file[(d[C.USER_ID], d[C.PRODUCT_ID])]

    summary_obj = s3_client.get_object(Bucket=s3_bucket, Key=f"factory/{partition}summary.json")
    summary_text = summary_obj["Body"].read().decode()
    summary = json.loads(summary_text)
    assert summary["rows_written"] == len(rows) and summary["dead_letters"] == 2
    _check_quality_summary(summary["quality"], rows)
    # The judge read every copy the gate let through, on the bundled model, in passes of its
    # own: its replies (held to the JSON schema) parse, land on the rows and are counted.
    judged = [r for r in rows if r[C.JUDGE_VERDICT] is not None]
    assert judged == [
        r for r in rows if r[C.STATUS] != C.REJECTED and r[C.TEXT]
    ]  # by default it never rejects
    assert all(
        r[C.JUDGE_VERDICT] in ("pass", "flagged", "unparsed") and r[C.JUDGE_TOKENS] > 0 for r in judged
    )
    assert any(r[C.JUDGE_VERDICT] in ("pass", "flagged") for r in judged)  # replies that parse
    assert summary["quality"]["judge"]["judged"] == len(judged)
    assert summary["quality"]["judge"]["tokens"] == sum(r[C.JUDGE_TOKENS] for r in judged)
    # Engine work: rows generated vs reused, the prefix cache (every channel's
    # system text and worked example are shared, so it must have served some),
    # prompt tokens per channel, and the per-minute progress samples.
    work = summary["engine_work"]
    generated = [r for r in rows if r[C.DEDUP_OF] is None]
    assert work["rows_generated"] == len(generated) and work["rows_reused"] == len(rows) - len(generated)
    assert work["prompt_tokens"] == sum(r[C.NUM_INPUT_TOKENS] for r in generated)
    assert 0 < work["prefix_cache_hit_rate"] < 1
    assert set(work["by_channel"]) == set(RUN_CHANNELS)
    assert summary["progress"] and summary["progress"][-1]["rows_done"] == len(rows)

    # The review queue: exactly the review rows, with the product facts beside the copy.
    review_rows = [r for r in rows if r[C.STATUS] == C.REVIEW]
    queue = _read_prefix(s3_client, s3_bucket, f"factory/{partition}review/")
    if review_rows:
        keys = (C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.TEXT)
        assert sorted(zip(*(queue[k].to_pylist() for k in keys))) == sorted(
            tuple(r[k] for k in keys) for r in review_rows
        )
        titles = dict(zip(products[C.PRODUCT_ID].to_pylist(), products["title"].to_pylist()))
        for q in queue.to_pylist():
            assert q["title"] == titles[q[C.PRODUCT_ID]] and q[C.REASONS] and q["price"] is not None
            assert len(q["description"]) <= 1_000
    else:
        assert queue is None
    assert summary["template_versions"] == {c: versions[c] for c in RUN_CHANNELS}
    # The manifest lists exactly the data files there are, with their rows; published last.
    manifest_text = s3_client.get_object(Bucket=s3_bucket, Key=f"factory/{partition}manifest.json")[
        "Body"
    ].read()
    manifest = json.loads(manifest_text)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="factory/")["Contents"]]
    for kind in ("copies", "dead_letters", "review"):
        listed = sorted(f"factory/{partition}{f['path']}" for f in manifest["files"][kind])
        assert listed == sorted(k for k in keys if k.startswith(f"factory/{partition}{kind}/")), kind
    assert sum(f["rows"] for f in manifest["files"]["copies"]) == len(rows) == manifest["rows"]["copies"]
    assert manifest["rows_by_status"] == summary["quality"]["status"] and manifest["attempt"] == 1
    assert [h["action"] for h in manifest["history"]] == ["new"] and manifest["config_hash"].startswith(
        "sha256:"
    )
    assert f"factory/{partition}_SUCCESS" in keys
    latest = json.loads(
        s3_client.get_object(Bucket=s3_bucket, Key="factory/latest/campaign=all.json")["Body"].read()
    )
    assert latest["manifest"] == f"{partition}manifest.json" and latest["run_id"] == f"{RUN_DATE}_all"
    # No object-store markers or stray files beside the data, and every object encrypted as asked.
    assert all(
        k.endswith((".parquet", ".json", "_SUCCESS")) or k == f"factory/{partition}report.html" for k in keys
    ), keys
    # The run report is published with the run (its rendering is tested in tests/cpu/test_report.py).
    assert manifest["report"] == "report.html"
    report = (
        s3_client.get_object(Bucket=s3_bucket, Key=f"factory/{partition}report.html")["Body"].read().decode()
    )
    assert "<svg" in report and S3_SECRET_KEY not in report and "U800001" not in report
    assert not [k for k in keys if "/_work/" in k]  # the repair queue is gone once the run is done
    for key in keys:
        assert s3_client.head_object(Bucket=s3_bucket, Key=key).get("ServerSideEncryption") == "AES256", key

    # The same command again: the run is published, so it exits 0 at once and writes nothing.
    again = subprocess.run(
        cmd,
        cwd=REPO,
        env=job_env(COPY_FACTORY_LOG_DIR=str(logs)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already published" in again.stdout and "Starting attempt" not in again.stderr
    assert [
        o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="factory/")["Contents"]
    ] == keys

    # Each invocation kept its log file, with every line the console had; none holds the secret either.
    log_files = sorted(logs.glob("nightly_copy-*.log"))
    assert len(log_files) == 2 and "Published" in log_files[0].read_text() + log_files[1].read_text()
    for text in (
        proc.stdout,
        proc.stderr,
        summary_text,
        manifest_text.decode(),
        again.stdout,
        again.stderr,
        *(f.read_text() for f in log_files),
    ):
        assert S3_SECRET_KEY not in text


def _check_verdicts(rows: list[dict]) -> None:
    """Every row says how it fared and, unless accepted, why."""
    for r in rows:
        assert r[C.STATUS] in C.STATUSES
        assert len(r[C.REASONS]) == len(set(r[C.REASONS])) and len(r[C.REASON_DETAILS]) >= len(r[C.REASONS])
        assert (r[C.STATUS] == C.ACCEPTED) == (r[C.REASONS] == []), r
        assert all(d.split(": ", 1)[0] in r[C.REASONS] for d in r[C.REASON_DETAILS])
        assert r[C.DRAFT] in (1, 2)
        if r[C.DRAFT] == 2:  # repaired: attempt 1 was rejected, and said why
            assert r[C.FIRST_DRAFT_REASONS], r
        else:  # with repair on, a row rejected on attempt 1 always gets an attempt 2
            assert r[C.FIRST_DRAFT_REASONS] is None and r[C.STATUS] != C.REJECTED, r
        assert r[C.COPY_LENGTH_LIMIT] > 0
        if r[C.TEXT] and "length_exceeded" not in r[C.REASONS]:
            assert r[C.COPY_LENGTH] <= r[C.COPY_LENGTH_LIMIT], r
        assert r[C.NUMERIC_FIDELITY] is None or 0.0 <= r[C.NUMERIC_FIDELITY] <= 1.0
    # The repair pass ran: the bundled model's first drafts are rejected often.
    assert any(r[C.DRAFT] == 2 for r in rows)


def _check_quality_summary(quality: dict, rows: list[dict]) -> None:
    """The summary's figures agree with the rows a reader sees."""
    assert quality["status"] == {s: sum(r[C.STATUS] == s for r in rows) for s in C.STATUSES}
    reasons = Counter(x for r in rows for x in r[C.REASONS])
    assert quality["reasons"] == dict(reasons)
    repaired = [r for r in rows if r[C.DRAFT] == 2]
    assert quality["repair"]["attempted"] == len(repaired)
    assert quality["before_repair"]["status"][C.REJECTED] == (
        len(repaired) + sum(r[C.STATUS] == C.REJECTED for r in rows if r[C.DRAFT] == 1)
    )
    per_channel = {ch: sum(n for n in counts.values()) for ch, counts in quality["status_by_channel"].items()}
    assert per_channel == dict(Counter(r[C.CHANNEL] for r in rows))
    corpus = quality["corpus"]
    assert corpus["rows"] == len(rows) and 0 < corpus["distinct_1"] <= 1 and 0 < corpus["distinct_2"] <= 1
    assert corpus["length_compliance"] is not None and 0 <= corpus["length_compliance"] <= 1

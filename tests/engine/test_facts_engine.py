"""Product facts with the real engine: the facts job (real Ray, vLLM on the CPU
with the bundled model, structured output) extracts facts for a few sample
products into a facts table on S3 (moto over HTTP); every reply parses and has
selling points; a second run extracts nothing and leaves the table as it was;
an edited description is extracted again, and only that product."""

from __future__ import annotations

import subprocess
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.facts import store as S
from factory.facts.extract import EXTRACTOR_VERSION
from factory.facts.schema import ProductFacts
from factory.storage import resolve
from tests.conftest import PYTHON, REPO, RUN_MARKER, job_env, reap

pytestmark = pytest.mark.engine

JOB = REPO / "jobs" / "extract_facts.py"
PRODUCT_IDS = ["P00000", "P00001", "P00002", "P00003"]


def _run(products: str, facts: str, endpoint: str) -> str:
    marker = uuid.uuid4().hex
    cmd = [
        PYTHON,
        str(JOB),
        "--products",
        products,
        "--facts",
        facts,
        "--s3-endpoint",
        endpoint,
        "--device",
        "cpu",
        "--batch-size",
        "8",
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, cwd=REPO, env=job_env(**{RUN_MARKER: marker}), capture_output=True, text=True, timeout=900
        )
    finally:
        reap(marker)
    assert proc.returncode == 0, proc.stderr[-5000:]
    print(f"--- job took {time.monotonic() - started:.0f} s\n{proc.stdout}")  # shown with pytest -rP
    return proc.stdout


def _line(stdout: str, label: str) -> int:
    return int(next(line for line in stdout.splitlines() if line.strip().startswith(label)).split()[1])


def _keys(client, bucket: str) -> list[str]:
    return sorted(
        o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="facts/").get("Contents", [])
    )


def test_facts_are_extracted_once_and_reused(s3_server, s3_client, s3_bucket, sample_dir, tmp_path):
    catalog = pq.read_table(sample_dir / "products.parquet")
    rows = [r for r in catalog.to_pylist() if r[C.PRODUCT_ID] in PRODUCT_IDS]
    products = tmp_path / "products.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=catalog.schema), products)
    facts_uri = f"s3://{s3_bucket}/facts"
    store = S.FactsStore(resolve(facts_uri, s3_server))

    first = _run(str(products), facts_uri, s3_server)
    assert (_line(first, "reused:"), _line(first, "extracted:"), _line(first, "failed:")) == (0, 4, 0), first
    stored = store.read()
    assert sorted(stored[C.PRODUCT_ID].to_pylist()) == PRODUCT_IDS
    hashes = {r[C.PRODUCT_ID]: S.content_hash(r) for r in rows}
    for row in stored.to_pylist():
        assert row[S.CONTENT_HASH] == hashes[row[C.PRODUCT_ID]]
        assert row[S.STATUS] == S.OK and row[S.REASON] is None
        assert row[S.MODEL] == "SmolLM2-135M-Instruct" and row[S.EXTRACTOR_VERSION] == EXTRACTOR_VERSION
        facts = ProductFacts.model_validate_json(row[S.FACTS])  # what the grammar produced parses
        print(row[C.PRODUCT_ID], row[S.FACTS], row[S.DROPPED])
        assert facts.selling_points and all(p.strip() for p in facts.selling_points)
    objects = _keys(s3_client, s3_bucket)

    second = _run(str(products), facts_uri, s3_server)
    assert (_line(second, "reused:"), _line(second, "extracted:"), _line(second, "failed:")) == (4, 0, 0), (
        second
    )
    assert _keys(s3_client, s3_bucket) == objects  # nothing written
    assert store.read().sort_by(C.PRODUCT_ID).equals(stored.sort_by(C.PRODUCT_ID))

    edited = [
        dict(r, description=r["description"] + " Now with a lifetime repair service.")
        if r[C.PRODUCT_ID] == "P00002"
        else r
        for r in rows
    ]
    pq.write_table(pa.Table.from_pylist(edited, schema=catalog.schema), products)
    third = _run(str(products), facts_uri, s3_server)
    assert (_line(third, "reused:"), _line(third, "extracted:"), _line(third, "failed:")) == (3, 1, 0), third
    after = store.read()
    new = [
        r
        for r in after.to_pylist()
        if (r[C.PRODUCT_ID], r[S.CONTENT_HASH])
        not in set(zip(stored[C.PRODUCT_ID].to_pylist(), stored[S.CONTENT_HASH].to_pylist()))
    ]
    assert [r[C.PRODUCT_ID] for r in new] == ["P00002"]
    assert new[0][S.CONTENT_HASH] == S.content_hash(edited[[r[C.PRODUCT_ID] for r in edited].index("P00002")])
    assert ProductFacts.model_validate_json(new[0][S.FACTS]).selling_points
    # The unchanged products' rows are exactly as the first run wrote them.
    old = after.filter(pa.compute.is_in(after[S.CONTENT_HASH], value_set=stored[S.CONTENT_HASH]))
    assert old.sort_by(C.PRODUCT_ID).equals(stored.sort_by(C.PRODUCT_ID))

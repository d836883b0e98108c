"""Choosing the published variants among candidates: verdict first, then the documented score."""

import numpy as np
import pyarrow as pa
import pytest

from factory import columns as C
from factory.candidates import CANDIDATE, CANDIDATE_RANK, rank_candidates


def _table(rows):
    names = (
        "pair",
        CANDIDATE,
        C.STATUS,
        C.NUMERIC_FIDELITY,
        "attribute_coverage",
        C.COPY_LENGTH,
        C.COPY_LENGTH_LIMIT,
    )
    return pa.Table.from_pylist([dict(zip(names, r)) for r in rows])


def _chosen(table, keep):
    out = rank_candidates(table, keep, ["pair"])
    return [(r["pair"], r[CANDIDATE], r[CANDIDATE_RANK]) for r in out.to_pylist()]


def test_verdict_comes_first_then_fidelity_coverage_and_fit():
    table = _table(
        [
            ("p1", 0, C.REJECTED, 1.0, 1.0, 50, 100),
            ("p1", 1, C.REVIEW, 1.0, 1.0, 50, 100),
            ("p1", 2, C.ACCEPTED, 0.5, 1.0, 50, 100),  # accepted beats any review or rejected
            ("p1", 3, C.ACCEPTED, 1.0, 0.2, 50, 100),  # better fidelity beats better coverage
            ("p2", 0, C.ACCEPTED, None, 0.5, 50, 100),  # no numbers: nothing wrong (fidelity 1)
            ("p2", 1, C.ACCEPTED, 1.0, 0.5, 120, 100),  # over the limit: fit 0.83
            ("p2", 2, C.ACCEPTED, 1.0, 0.5, 200, 100),  # fit 0.5
            ("p2", 3, C.ACCEPTED, 1.0, 0.9, 200, 100),  # coverage beats fit
        ]
    )
    assert _chosen(table, 2) == [("p1", 3, 1), ("p1", 2, 2), ("p2", 3, 1), ("p2", 0, 2)]
    assert [c for p, c, _ in _chosen(table, 4) if p == "p2"] == [3, 0, 1, 2]
    assert [c for p, c, _ in _chosen(table, 4) if p == "p1"] == [3, 2, 1, 0]


def test_ties_keep_draw_order_and_the_choice_is_stable():
    table = _table([("p", i, C.ACCEPTED, 1.0, 0.5, 40, 100) for i in (3, 1, 2, 0)])
    assert _chosen(table, 3) == [("p", 0, 1), ("p", 1, 2), ("p", 2, 3)]
    assert _chosen(table.take([3, 2, 1, 0]), 3) == _chosen(table, 3)


def test_edges():
    empty = pa.schema(
        [
            ("pair", pa.string()),
            (CANDIDATE, pa.int64()),
            (C.STATUS, pa.string()),
            (C.NUMERIC_FIDELITY, pa.float64()),
            ("attribute_coverage", pa.float64()),
            (C.COPY_LENGTH, pa.int32()),
            (C.COPY_LENGTH_LIMIT, pa.int32()),
        ]
    ).empty_table()
    assert rank_candidates(empty, 1, ["pair"]).num_rows == 0
    with pytest.raises(ValueError):
        rank_candidates(empty, 0, ["pair"])


# --------------------------------------------------------------------------- in the run


def test_draws_are_dealt_to_the_variants_side_by_side():
    from factory import columns as C
    from factory.candidates import draw_candidates

    rows = pa.table({C.ROW_ID: ["a", "b", "c"], C.VARIANT: pa.array([0, 1, 0], pa.int32())})
    out = draw_candidates(rows, candidates=3, copies=2)  # variant 0 draws 0 and 2, variant 1 draws 1
    assert list(zip(out[C.ROW_ID].to_pylist(), out[CANDIDATE].to_pylist())) == [
        ("a", 0),
        ("a", 2),
        ("b", 1),
        ("c", 0),
        ("c", 2),
    ]
    assert draw_candidates(rows.slice(0, 1), 4, 1)[CANDIDATE].to_pylist() == [0, 1, 2, 3]


def test_candidates_need_room_and_randomness():
    from pydantic import ValidationError

    from factory.config import JobConfig

    with pytest.raises(ValidationError, match=r"candidates \(2\) must be at least variants \(3\)"):
        JobConfig(candidates=2, variants=3)
    with pytest.raises(ValidationError, match="temperature > 0"):
        JobConfig(candidates=2, engine={"temperature": 0})
    assert JobConfig().candidates == 1


@pytest.mark.slow  # the whole job twice (a killed process, then the resume): make test, not test-fast
def test_the_run_draws_k_gates_all_and_publishes_each_owed_rows_best(
    s3_server, s3_client, s3_bucket, sample_dir, tmp_path, monkeypatch
):
    """K=3, M=1 on real Ray with the instant engine, whose draws of one
    prompt differ in wording and in whether the gate rejects them (half of
    them, by a hash of row id and draw). The first process dies while
    choosing; the same command resumes and draws nothing again. Each owed
    row is written once, with its best draw: accepted whenever any draw
    was, repaired when none was."""
    import json

    import pyarrow.parquet as pq
    import ray

    import jobs.nightly_copy as nightly_job
    from benchmarks import cpu_side
    from factory import columns as C
    from factory.pipeline import passes
    from factory.quality.metrics import attribute_coverage_rows
    from factory.reader import read_published
    from tests.conftest import make_stand_in_model
    from tests.owed import CHANNELS, check_exactly_once, owed_pairs, s3_job_args, upload_inputs

    pairs, expected = owed_pairs(sample_dir, 24)
    upload_inputs(s3_client, s3_bucket, "in", pairs, sample_dir)
    model = make_stand_in_model(tmp_path / "stand-in-model")
    share = 0.5
    monkeypatch.setattr(passes, "build_generate_stage", cpu_side.echo_generate_stage(reject_share=share))
    out = f"s3://{s3_bucket}/out"
    args = [
        *s3_job_args(s3_bucket, s3_server, out),
        "--run-date",
        "2026-12-01",
        "--channels",
        ",".join(CHANNELS),
        "--model",
        str(model),
        "--rows-per-file",
        "5",
        "--candidates",
        "3",
        "--no-dedup",
    ]
    choose = passes._choose

    def lost(ctx):
        def fail(batch):
            raise RuntimeError("node lost")

        return lambda ds: ds.map_batches(fail, batch_format="pyarrow")

    ray.shutdown()  # an earlier module's shared Ray (conftest's local_ray) may still be up
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        monkeypatch.setattr(passes, "_choose", lost)
        try:
            died = nightly_job.main(args)
        except Exception as exc:  # noqa: BLE001
            died = exc
        assert died != 0 and read_published(out, "2026-12-01", s3_endpoint=s3_server) is None, died
        monkeypatch.setattr(passes, "_choose", choose)
        code = nightly_job.main(args)
    finally:
        ray.shutdown()
    assert code == 0
    rows = read_published(out, "2026-12-01", s3_endpoint=s3_server)
    check_exactly_once(rows, expected)
    n = rows.num_rows

    # The best draw by the ranking, rebuilt from the stand-in's rule: a
    # flawed draw is rejected, the others accepted; coverage measured alike.
    products = pq.read_table(sample_dir / "products.parquet")
    by_id = {p[C.PRODUCT_ID]: p for p in products.to_pylist()}
    draws = []
    for r in rows.to_pylist():
        p = by_id[r[C.PRODUCT_ID]]
        prompt = json.dumps(
            [{"role": "user", "content": f"<product>{p['title']} by {p['brand']}, x</product>"}]
        )
        for d in range(3):
            text = cpu_side.echo_copy(prompt, r[C.CHANNEL], r[C.LOCALE], r[C.ROW_ID], share, d)
            flawed = cpu_side.echo_flawed(r[C.ROW_ID], d, share)
            draws.append(
                {
                    C.ROW_ID: r[C.ROW_ID],
                    CANDIDATE: d,
                    C.TEXT: text,
                    C.PRODUCT_ID: r[C.PRODUCT_ID],
                    C.STATUS: C.REJECTED if flawed else C.ACCEPTED,
                }
            )
    draws = pa.Table.from_pylist(draws)
    coverage = attribute_coverage_rows(draws, products)
    draws = draws.append_column("attribute_coverage", pa.array(coverage, mask=np.isnan(coverage)))
    best = {r[C.ROW_ID]: r for r in rank_candidates(draws, 1, [C.ROW_ID]).to_pylist()}
    published = {r[C.ROW_ID]: r for r in rows.to_pylist()}
    moved = 0
    for row_id, row in published.items():
        if best[row_id][C.STATUS] == C.ACCEPTED:
            assert (row[C.STATUS], row[C.DRAFT], row[C.TEXT]) == (C.ACCEPTED, 1, best[row_id][C.TEXT]), row
            moved += best[row_id][CANDIDATE] > 0
        else:  # every draw rejected: the repair pass drew once more, told why
            assert row[C.DRAFT] == 2 and row[C.FIRST_DRAFT_REASONS] == ["banned_claim"], row
    # Both cases happen (1/8 of rows have every draw flawed), and draws past the first won.
    assert moved and any(r[C.DRAFT] == 2 for r in published.values())

    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="out/").get("Contents", [])]
    [summary_key] = [k for k in keys if k.endswith("/summary.json")]
    [manifest_key] = [k for k in keys if k.endswith("/manifest.json")]
    summary = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=summary_key)["Body"].read())
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=manifest_key)["Body"].read())
    counted = summary["engine_work"]["candidates"]
    assert manifest["candidates"] == counted
    assert (counted["per_pair_channel"], counted["drawn"], counted["kept"]) == (3, 3 * n, n)
    # Every draw's engine work, not only the kept draw's (the stand-in: a token per 4 characters, plus one).
    assert counted["output_tokens"] == sum(len(t) // 4 + 1 for t in draws[C.TEXT].to_pylist())
    first, second = manifest["history"]
    assert second["action"] == "resume" and second["candidates_drawn"] == 0 and second["first_drafts"] == n
    # Progress counts each owed row once (its kept draw), not every draw.
    assert summary["progress"][-1]["rows_done"] == n
    assert not [k for k in keys if "/_work/" in k]  # the draws went with the work


def test_files_of_one_rows_draws_do_not_share_a_name(tmp_path):
    """The writer names a file by its rows' ids; two files holding draws of the
    same row must still get two names (one would overwrite the other), and a
    candidates file's footer counts its draws and the rows they were drawn for."""
    from factory import columns as C
    from factory.candidates import CandidateFooter, tally
    from factory.footer import read_footers
    from factory.stages.write import Sink, WriteParquetFiles
    from factory.storage import resolve

    folder = resolve(str(tmp_path / "candidates"))
    write = WriteParquetFiles({"candidates": Sink(folder, footer=CandidateFooter(1))})
    draws = pa.table(
        {
            C.ROW_ID: ["00ab", "00ab"],
            CANDIDATE: pa.array([0, 1], pa.int32()),
            C.NUM_INPUT_TOKENS: pa.array([50, 50], pa.int32()),
            C.NUM_CACHED_TOKENS: pa.array([0, 48], pa.int32()),
            C.NUM_OUTPUT_TOKENS: pa.array([9, 11], pa.int32()),
        }
    )
    names = {write(draws.slice(i, 1))["file"][0].as_py() for i in range(2)}
    assert len(names) == 2
    assert tally(read_footers(folder)) == {
        "drawn": 2,
        "kept": 1,
        "prompt_tokens": 100,
        "cached_prompt_tokens": 48,
        "output_tokens": 20,
        "cache_measured_draws": 2,
    }

"""Pair checks and lookup-table rows: malformed keys found by row, never fatal."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from factory import columns as C
from factory.inputs import USERS, malformed_reasons, read_lookup_table
from factory.stages.check import CheckPairs, ReadPairs
from factory.stages.users import AttachUsers
from factory.storage import resolve


def _with_users(pairs: pa.Table, users: pa.Table) -> pa.Table:
    """``pairs`` as pass 1 hands them to staging: each with its user's columns
    (the users table given the contract's absent columns as nulls, as the input check does)."""
    present = users.column_names
    absent = {c: pa.nulls(len(users), USERS.type_of(c)) for c in C.USER_COLUMNS if c not in present}
    full = pa.table({**{c: users[c] for c in users.column_names}, **absent})
    return AttachUsers(full)(pairs).drop_columns([C.USER_FOUND])


def _text(values) -> pa.Array:
    return pa.array([v.encode() if isinstance(v, str) else v for v in values], pa.binary()).view(pa.string())


def test_malformed_keys_are_named_per_row():
    column = _text(["U1", None, b"\xff\xfe", "U" * 300, "U\x00", "", "用户"])
    assert malformed_reasons(column, "user_id") == [
        None,
        "null_user_id",
        "invalid_utf8_user_id",
        "too_long_user_id",
        "control_characters_user_id",
        None,
        None,
    ]
    assert malformed_reasons(_text([None]), "channel", required=False) == [None]


def test_check_pairs_reasons_and_printable_dead_letters():
    users, products = pa.table({C.USER_ID: ["U1", "U2"]}), pa.table({C.PRODUCT_ID: ["P1"]})
    batch = pa.table(
        {
            C.USER_ID: _text(["U1", "U2", b"\xff", "U" * 400, "U9", "U1", "U9"]),
            C.PRODUCT_ID: _text(["P1", "P1", "P1", "P1", "P1", "P9", "P9"]),
            C.CHANNEL: _text([None, "sms", None, None, None, "push", "push"]),
        }
    )
    out = CheckPairs(products, ["push", "sms", "ad_headline"])(AttachUsers(users)(batch)).to_pylist()
    assert [r[C.REASON] for r in out] == [
        None,
        None,
        "invalid_utf8_user_id",
        "too_long_user_id",
        "unknown_user_id",
        "unknown_product_id",
        "unknown_user_id",  # an unknown user is named before an unknown product
    ]
    assert out[2][C.USER_ID] == "\ufffd" and len(out[3][C.USER_ID].encode()) <= 260


def test_read_pairs_adds_file_and_row_number(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(
        pa.table({C.USER_ID: [f"U{i}" for i in range(10)], C.PRODUCT_ID: ["P1"] * 10}), path, row_group_size=4
    )
    reader = ReadPairs(resolve(str(tmp_path)).fs, [C.USER_ID, C.PRODUCT_ID], {str(path): "shown.parquet"})
    table = reader({"file": [str(path)], "row_group": [1], "first_row": [4], "take": [3]})
    assert table[C.USER_ID].to_pylist() == ["U4", "U5", "U6"]
    assert table[C.SOURCE_ROW].to_pylist() == [4, 5, 6] and set(table[C.SOURCE].to_pylist()) == {
        "shown.parquet"
    }


def test_lookup_rows_with_bad_keys_are_rejected_with_file_and_row(tmp_path):
    rows = [
        {C.USER_ID: "U1", C.LOCALE: "en-US", "age_band": "25-34"},
        {C.USER_ID: None, C.LOCALE: "en-US", "age_band": None},
        {C.USER_ID: "U1", C.LOCALE: "de-DE", "age_band": None},
        {C.USER_ID: "U2", C.LOCALE: "en-US", "age_band": None},
    ]
    table = pa.Table.from_pylist(rows)
    ages = _text(["25-34", None, None, b"\xff\xfe"])
    table = table.set_column(table.column_names.index("age_band"), "age_band", ages)
    pq.write_table(table, tmp_path / "users.parquet")
    users, report = read_lookup_table(resolve(str(tmp_path / "users.parquet")), USERS, C.USER_ID)
    assert users[C.USER_ID].to_pylist() == ["U1", "U2"]
    assert users[C.LOCALE].to_pylist() == ["en-US", "en-US"]  # the first row of a repeated id wins
    assert users["age_band"].to_pylist() == ["25-34", "\ufffd\ufffd"]  # repaired, not fatal
    assert report.problems == {"null_user_id": 1, "duplicate_user_id": 1}
    assert [(r["reason"], r["source_row"]) for r in report.rejects] == [
        ("null_user_id", 1),
        ("duplicate_user_id", 2),
    ]
    assert report.repaired_text == {"age_band": 1}


def test_the_users_table_is_read_and_checked_on_ray_and_the_driver_holds_a_reference(tmp_path, local_ray):
    import ray

    from factory.inputs import check_schema
    from factory.pipeline.plan import load_users, scope, users_named

    rows = [
        {C.USER_ID: "U1", C.LOCALE: "en-US"},
        {C.USER_ID: None, C.LOCALE: "en-US"},
        {C.USER_ID: "U2", C.LOCALE: "zh-CN"},
        {C.USER_ID: "U3", C.LOCALE: None},
        {C.USER_ID: "U4", C.LOCALE: "en_GB"},
        {C.USER_ID: "U2", C.LOCALE: "en-US"},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "users.parquet")
    users_input = check_schema(resolve(str(tmp_path / "users.parquet")), USERS)

    plan = _users_plan(users_input, locales=["en"])
    load_users(plan)
    assert isinstance(plan.users, ray.ObjectRef)  # the rows stay in the object store
    assert ray.get(plan.users)[C.USER_ID].to_pylist() == ["U1", "U2", "U3", "U4"]
    report = plan.table_reports[0]
    assert (report.name, report.rows_read, report.rows_kept) == ("users", 6, 4)
    assert [(r["reason"], r["source_row"]) for r in report.rejects] == [
        ("null_user_id", 1),
        ("duplicate_user_id", 5),
    ]
    # --locales en: a zh-CN user and one with no locale are out of scope, as ids on Ray.
    assert ray.get(plan.locale_excluded).to_pylist() == ["U2", "U3"]
    assert scope(plan)["excluded_users"] is plan.locale_excluded
    assert users_named(plan, ["U4", "U9"])[C.USER_ID].to_pylist() == ["U4"]

    every_locale = _users_plan(users_input)
    load_users(every_locale)
    assert every_locale.locale_excluded is None and scope(every_locale) == {}


def test_a_users_file_damaged_past_its_footer_is_a_clear_error_from_ray(tmp_path, local_ray):
    import pytest

    from factory.inputs import InputError, check_schema
    from factory.pipeline.plan import load_users

    path = tmp_path / "users.parquet"
    pq.write_table(pa.table({C.USER_ID: [f"U{i}" for i in range(2000)], C.LOCALE: ["en-US"] * 2000}), path)
    users_input = check_schema(resolve(str(path)), USERS)  # the footer is sound
    damaged = bytearray(path.read_bytes())
    damaged[8 : len(damaged) // 2] = b"\x55" * (len(damaged) // 2 - 8)
    path.write_bytes(bytes(damaged))
    with pytest.raises(InputError, match=f"(?s)users: cannot read {path}: .*page header"):
        load_users(_users_plan(users_input))


def _users_plan(users_input, **settings):
    """A plan with only what ``load_users`` reads."""
    from factory.config import JobConfig
    from factory.pipeline.plan import Plan

    return Plan(
        config=JobConfig(**settings),
        templates={},
        pairs=None,
        users_input=users_input,
        products=None,
        table_reports=[],
        output=None,
        run=None,
        model_source="",
        judge_model_source="",
    )


def test_duplicate_and_overlapping_pairs_owe_each_row_once(tmp_path, local_ray):
    from types import SimpleNamespace

    from factory.config import JobConfig
    from factory.pipeline.staging import stage_rows as _stage_rows
    from factory.publish import Attempt
    from factory.storage import read_parquet, write_parquet

    config = JobConfig(channels=["push", "sms"], run_date="2026-11-20")
    attempt = Attempt(resolve(str(tmp_path)), 1)
    staged = pa.table(
        {
            C.USER_ID: ["U1", "U1", "U1", "U2", "U1"],
            C.PRODUCT_ID: ["P1", "P1", "P1", "P1", "P1"],
            C.CHANNEL: [
                None,
                None,
                "push",
                "sms",
                "email_subject",
            ],  # row 4: a channel this run does not write
            C.CAMPAIGN_ID: ["c", "c", "c", "c", "d"],
            C.SOURCE: ["f.parquet"] * 5,
            C.SOURCE_ROW: pa.array([0, 7, 3, 5, 9], pa.int64()),
        }
    )
    from factory.prompts import load_templates

    users = pa.table(
        {C.USER_ID: ["U1", "U2"], C.LOCALE: ["en-US", "en-US"], "interests": [["tea"], ["hiking"]]}
    )  # different profiles: no prompt is shared
    write_parquet(attempt.checked.join("bucket=00000", "part-x.parquet"), _with_users(staged, users))
    plan = SimpleNamespace(config=config, templates=load_templates())
    assert _stage_rows(plan, attempt, 1).rows == 3  # U1xP1 push+sms, U2xP1 sms
    rows = read_parquet(attempt.pairs.join("part-00000-00000.parquet")).to_pylist()
    assert sorted((r[C.USER_ID], r[C.CHANNEL], r[C.VARIANT]) for r in rows) == [
        ("U1", "push", 0),
        ("U1", "sms", 0),
        ("U2", "sms", 0),
    ]
    dead = read_parquet(attempt.dead_letters.join("part-duplicate-pairs-00000.parquet")).to_pylist()
    # The repeat (row 7) and the pair whose only channel was already owed (row 3) are dead letters.
    assert sorted((d[C.SOURCE_ROW], d[C.REASON]) for d in dead) == [
        (3, "duplicate_pair"),
        (7, "duplicate_pair"),
    ]


def test_rows_with_an_identical_prompt_are_staged_as_followers_of_the_first(tmp_path, local_ray):
    from types import SimpleNamespace

    from factory.config import JobConfig
    from factory.pipeline.staging import stage_rows as _stage_rows
    from factory.prompts import load_templates
    from factory.publish import Attempt
    from factory.storage import read_parquet, write_parquet

    staged = pa.table(
        {
            C.USER_ID: ["U2", "U1", "U3"],
            C.PRODUCT_ID: ["P1"] * 3,
            C.CHANNEL: ["push"] * 3,
            C.CAMPAIGN_ID: ["c"] * 3,
            C.SOURCE: ["f.parquet"] * 3,
            C.SOURCE_ROW: pa.array([0, 1, 2], pa.int64()),
        }
    )
    users = pa.table(
        {C.USER_ID: ["U1", "U2", "U3"], C.LOCALE: ["en-US"] * 3, "interests": [["tea"], ["tea"], ["hiking"]]}
    )  # U1 and U2: one segment
    for dedup_on, generated, followers in (
        (True, ["U1", "U3"], [("U2", "U1")]),
        (False, ["U1", "U2", "U3"], []),
    ):
        attempt = Attempt(resolve(str(tmp_path / str(dedup_on))), 1)
        write_parquet(attempt.checked.join("bucket=00000", "part-x.parquet"), _with_users(staged, users))
        config = JobConfig(channels=["push"], run_date="2026-11-20", dedup_prompts=dedup_on)
        plan = SimpleNamespace(config=config, templates=load_templates())
        assert _stage_rows(plan, attempt, 1).rows == 3
        rows = read_parquet(attempt.pairs.join("part-00000-00000.parquet"))
        assert sorted(rows[C.USER_ID].to_pylist()) == generated
        ids = dict(zip(rows[C.USER_ID].to_pylist(), rows[C.ROW_ID].to_pylist()))
        got = (
            read_parquet(attempt.followers.join("part-00000-00000.parquet")).to_pylist() if followers else []
        )
        # The leader is the first row in staged order (sorted: U1 before U2), whatever the input order.
        assert [(f[C.USER_ID], f[C.DEDUP_OF]) for f in got] == [(u, ids[lead]) for u, lead in followers]


def test_staging_in_buckets_owes_the_same_rows_as_staging_at_once(tmp_path, local_ray):
    """A big run is staged one product bucket per Ray task; the rows, their
    leaders and the duplicate pairs must not depend on the bucketing."""
    import random
    from types import SimpleNamespace

    from factory.config import JobConfig
    from factory.pipeline import staging
    from factory.prompts import load_templates
    from factory.publish import Attempt
    from factory.stages.write import Sink, WriteParquetFiles
    from factory.storage import list_files, read_parquet

    rng = random.Random(5)
    n = 400
    staged = pa.table(
        {
            C.USER_ID: [f"U{rng.randrange(30)}" for _ in range(n)],
            C.PRODUCT_ID: [f"P{rng.randrange(12)}" for _ in range(n)],
            C.CHANNEL: [rng.choice([None, "push", "sms"]) for _ in range(n)],
            C.CAMPAIGN_ID: [rng.choice(["c", "d"]) for _ in range(n)],
            C.SOURCE: ["f.parquet"] * n,
            C.SOURCE_ROW: pa.array(range(n), pa.int64()),
        }
    )
    # Three segments of ten users: many identical prompts, so leaders matter.
    users = pa.table(
        {
            C.USER_ID: [f"U{i}" for i in range(30)],
            C.LOCALE: ["en-US"] * 30,
            "interests": [[f"interest {i % 3}"] for i in range(30)],
        }
    )
    plan = SimpleNamespace(
        config=JobConfig(channels=["push", "sms"], run_date="2026-11-20"),
        templates=load_templates(),
    )

    def stage(folder, n_buckets):
        attempt = Attempt(resolve(str(tmp_path / folder)), 1)
        # Pass 1 writes several batches, each split by product bucket, as its writer routes them.
        for k in range(4):
            checked = _with_users(staged.slice(k * 100, 100), users)
            checked = checked.append_column(C.REASON, pa.nulls(checked.num_rows, pa.string()))  # all servable
            batch = staging.route_checked(checked, "r", None, None, n_buckets)
            WriteParquetFiles(
                {
                    staging.bucket_name(b): Sink(
                        attempt.checked.join(staging.bucket_name(b)), staging.staged_pair_shape
                    )
                    for b in range(n_buckets)
                },
                C.ROUTE,
            )(batch)
        owed = staging.stage_rows(plan, attempt, n_buckets)

        def read(loc, cols):
            return sorted(
                tuple(r.values())
                for f in list_files(loc, ".parquet")
                for r in read_parquet(loc.join(f.base_name), columns=cols).to_pylist()
            )

        assert not list_files(attempt.checked)  # work files cleared
        return (
            owed,
            read(attempt.pairs, [C.ROW_ID]),
            read(attempt.followers, [C.ROW_ID, C.DEDUP_OF]),
            read(attempt.dead_letters, [C.SOURCE_ROW, C.REASON]),
            len(list_files(attempt.pairs)),
        )

    at_once, in_buckets = stage("one", 1), stage("many", 7)
    assert at_once[4] == 1 and in_buckets[4] > 1  # one bucket, then several
    assert in_buckets[:4] == at_once[:4]
    owed, generated, followers, dead, _ = at_once
    assert owed.rows == len(generated) + len(followers) and followers and dead
    # The fingerprint the copies must add up to covers exactly the staged rows, leaders and followers.
    from factory.fingerprint import Fingerprint

    assert owed == Fingerprint.of([r[0] for r in generated] + [f[0] for f in followers])


def test_a_resumed_process_finds_what_is_still_owed_with_an_anti_join(local_ray, tmp_path):
    from factory.pipeline import resume
    from factory.publish import Attempt
    from factory.storage import list_files, write_parquet

    attempt = Attempt(resolve(str(tmp_path / "run")), 1)
    write_parquet(
        attempt.pairs.join("part-a.parquet"), pa.table({C.ROW_ID: ["a1", "a2", "a3"], "x": [1, 2, 3]})
    )
    write_parquet(attempt.pairs.join("part-b.parquet"), pa.table({C.ROW_ID: ["a4", "a5"], "x": [4, 5]}))
    write_parquet(attempt.copies.join("part-c.parquet"), pa.table({C.ROW_ID: ["a1", "a5"]}))
    write_parquet(attempt.repair_queue.join("part-d.parquet"), pa.table({C.ROW_ID: ["a3"]}))
    written = [attempt.copies, attempt.repair_queue]

    # A process that began the attempt reads no id: the source as it is.
    fresh = resume.remaining(attempt, attempt.pairs, written, resumed=False, num_cpus=0.5, name="t")
    assert (fresh.folder, fresh.rows) == (attempt.pairs, 5)
    # A resumed one gets the rows no written file holds, with every column, in files of their own.
    todo = resume.remaining(attempt, attempt.pairs, written, resumed=True, num_cpus=0.5, name="t")
    assert todo.rows == 2 and todo.folder.uri.endswith("_work/remaining/t")
    got = pa.concat_tables([pq.read_table(f) for f in todo.files])
    assert sorted(zip(got[C.ROW_ID].to_pylist(), got["x"].to_pylist())) == [("a2", 2), ("a4", 4)]
    # Nothing written yet: no join, the source as it is.
    assert (
        resume.remaining(attempt, attempt.pairs, [resolve(str(tmp_path / "none"))], True, 0.5, "t").rows == 5
    )
    assert list_files(attempt.copies, ".parquet")  # the written files are only read


def test_followers_meet_their_leaders_rows_in_a_join(local_ray, tmp_path):
    import ray

    from factory.pipeline import resume
    from factory.stages.reuse import reuse_copy
    from factory.storage import write_parquet

    # Where the job keeps them: a path whose attempt=0001 must not pass for a column.
    copies = resolve(str(tmp_path / "runs" / "date=2026-12-01" / "campaign=all" / "attempt=0001" / "copies"))
    write_parquet(
        copies.join("part-a.parquet"),
        pa.Table.from_pylist(
            [
                {
                    C.ROW_ID: "b1",
                    C.USER_ID: "U1",
                    C.CAMPAIGN_ID: "c",
                    C.VARIANT: 0,
                    C.DEDUP_OF: None,
                    C.TEXT: "Hi",
                    C.STATUS: C.ACCEPTED,
                    C.REASONS: ["x"],
                    C.DRAFT: 2,
                    C.NUM_INPUT_TOKENS: 50,
                    C.NUM_OUTPUT_TOKENS: 5,
                    C.NUM_CACHED_TOKENS: 10,
                    C.MODEL: "m",
                    C.RUN_ID: "r",
                    C.RUN_DATE: dt.date(2026, 12, 1),
                    C.GENERATED_AT: dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
                }
            ]
        ),
    )
    followers = ray.data.from_arrow(
        pa.Table.from_pylist(
            [
                {
                    C.ROW_ID: "f1",
                    C.USER_ID: "U2",
                    C.PRODUCT_ID: "P",
                    C.CHANNEL: "push",
                    C.CAMPAIGN_ID: "c",
                    C.VARIANT: 0,
                    C.DEDUP_OF: "b1",
                    # Its own user's profile, as staging writes it: the gate judges the row for U2.
                    **{f: ["tea"] for f in C.USERS_LIST_FIELDS},
                }
            ]
        )
    )
    [row] = (
        resume.with_leaders(followers, copies, 0.5, rows=1)
        .map_batches(reuse_copy, batch_format="pyarrow")
        .take_all()
    )
    assert (row[C.ROW_ID], row[C.USER_ID], row[C.TEXT], list(row[C.REASONS])) == ("f1", "U2", "Hi", ["x"])
    assert (row[C.SAVED_PROMPT_TOKENS], row[C.NUM_INPUT_TOKENS]) == (50, 0)
    assert row[C.DRAFT] == 2 and "date" not in row and "campaign" not in row
    assert list(row["interests"]) == ["tea"]
    # The leader's provenance stays behind: "model" would be a LoRA adapter's name to Ray LLM.
    assert not {C.MODEL, C.RUN_ID, C.RUN_DATE, C.GENERATED_AT} & set(row)


def test_users_reach_the_pairs_the_same_through_the_hash_join_and_the_broadcast(local_ray):
    """A large users table meets the pairs in Ray Data's hash join, a small
    one is broadcast: the checked pairs must not tell which. Unknown users,
    null ids and broken UTF-8 reach CheckPairs alike, and the join's large
    Arrow types do not leak into what staging writes."""
    from types import SimpleNamespace

    import ray

    from factory.config import JobConfig
    from factory.pipeline.staging import with_users

    users = pa.table(
        {
            C.USER_ID: ["U1", "U2", "U3"],
            C.LOCALE: ["en-US", "de-DE", "fr-FR"],
            **{c: pa.array([["tea"], None, ["a", "b"]], pa.list_(pa.string())) for c in C.USERS_LIST_FIELDS},
            "age_band": ["25-34", None, "55+"],
            "loyalty_tier": [None, "gold", None],
        }
    )
    pairs = pa.table(
        {
            C.USER_ID: _text(["U1", "U9", None, b"\xff", "U3", "U1", "U2"] * 30),
            C.PRODUCT_ID: _text(["P1"] * 210),
            C.SOURCE_ROW: pa.array(range(210), pa.int64()),
        }
    )
    products = pa.table({C.PRODUCT_ID: ["P1"]})

    def checked(join_rows: int) -> pa.Table:
        plan = SimpleNamespace(
            config=JobConfig(run_date="2026-11-20", users_join_rows=join_rows),
            users=ray.put(users),
            users_rows=users.num_rows,
            pairs=SimpleNamespace(files=[], row_groups={}),
        )
        ds = with_users(ray.data.from_arrow(pairs).repartition(4), plan)
        out = pa.concat_tables(
            [
                CheckPairs(products, ["push"])(t)
                for t in ds.iter_batches(batch_format="pyarrow", batch_size=None)
            ]
        )
        return out.sort_by(C.SOURCE_ROW)

    broadcast, joined = checked(join_rows=10), checked(join_rows=0)
    assert joined.to_pylist() == broadcast.to_pylist()
    assert [r[C.REASON] for r in joined.to_pylist()[:7]] == [
        None,
        "unknown_user_id",
        "null_user_id",
        "invalid_utf8_user_id",
        None,
        None,
        None,
    ]
    good = joined.filter(pc.is_null(joined[C.REASON]))
    assert good.slice(0, 4).select([C.USER_ID, C.LOCALE, "interests", "loyalty_tier"]).to_pylist() == [
        {C.USER_ID: "U1", C.LOCALE: "en-US", "interests": ["tea"], "loyalty_tier": None},
        {C.USER_ID: "U3", C.LOCALE: "fr-FR", "interests": ["a", "b"], "loyalty_tier": None},
        {C.USER_ID: "U1", C.LOCALE: "en-US", "interests": ["tea"], "loyalty_tier": None},
        {C.USER_ID: "U2", C.LOCALE: "de-DE", "interests": None, "loyalty_tier": "gold"},
    ]
    # What staging reads: the run's own types, whichever way the users came.
    for name in C.USER_COLUMNS + (C.USER_ID,):
        assert not str(joined.schema.field(name).type).startswith("large"), name

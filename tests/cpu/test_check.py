"""Pair checks and lookup-table rows: malformed keys found by row, never fatal."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from factory import columns as C
from factory.inputs import USERS, malformed_reasons, read_lookup_table
from factory.stages.check import CheckPairs, ReadPairs
from factory.storage import resolve


def _text(values) -> pa.Array:
    return pa.array([v.encode() if isinstance(v, str) else v for v in values], pa.binary()).view(pa.string())


def test_malformed_keys_are_named_per_row():
    column = _text(["U1", None, b"\xff\xfe", "U" * 300, "U\x00", "", "用户"])
    assert malformed_reasons(column, "user_id") == [
        None, "null_user_id", "invalid_utf8_user_id", "too_long_user_id", "control_characters_user_id", None, None]
    assert malformed_reasons(_text([None]), "channel", required=False) == [None]


def test_check_pairs_reasons_rows_owed_and_printable_dead_letters():
    users, products = pa.table({C.USER_ID: ["U1", "U2"]}), pa.table({C.PRODUCT_ID: ["P1"]})
    batch = pa.table({
        C.USER_ID: _text(["U1", "U2", b"\xff", "U" * 400, "U9", "U1"]),
        C.PRODUCT_ID: _text(["P1", "P1", "P1", "P1", "P1", "P9"]),
        C.CHANNEL: _text([None, "sms", None, None, None, "push"]),
    })
    out = CheckPairs(users, products, ["push", "sms"], ["push", "sms", "ad_headline"], 2)(batch).to_pylist()
    assert [r[C.REASON] for r in out] == [None, None, "invalid_utf8_user_id", "too_long_user_id",
                                          "unknown_user_id", "unknown_product_id"]
    assert [r[C.ROWS_OWED] for r in out] == [4, 2, 0, 0, 0, 0]  # channels x variants
    assert out[2][C.USER_ID] == "\ufffd" and len(out[3][C.USER_ID].encode()) <= 260


def test_read_pairs_adds_file_and_row_number(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({C.USER_ID: [f"U{i}" for i in range(10)], C.PRODUCT_ID: ["P1"] * 10}), path,
                   row_group_size=4)
    reader = ReadPairs(resolve(str(tmp_path)).fs, [C.USER_ID, C.PRODUCT_ID], {str(path): "shown.parquet"})
    table = reader({"file": [str(path)], "row_group": [1], "first_row": [4], "take": [3]})
    assert table[C.USER_ID].to_pylist() == ["U4", "U5", "U6"]
    assert table[C.SOURCE_ROW].to_pylist() == [4, 5, 6] and set(table[C.SOURCE].to_pylist()) == {"shown.parquet"}


def test_lookup_rows_with_bad_keys_are_rejected_with_file_and_row(tmp_path):
    rows = [{C.USER_ID: "U1", C.LOCALE: "en-US", "age_band": "25-34"},
            {C.USER_ID: None, C.LOCALE: "en-US", "age_band": None},
            {C.USER_ID: "U1", C.LOCALE: "de-DE", "age_band": None},
            {C.USER_ID: "U2", C.LOCALE: "en-US", "age_band": None}]
    table = pa.Table.from_pylist(rows)
    ages = _text(["25-34", None, None, b"\xff\xfe"])
    table = table.set_column(table.column_names.index("age_band"), "age_band", ages)
    pq.write_table(table, tmp_path / "users.parquet")
    users, report = read_lookup_table(resolve(str(tmp_path / "users.parquet")), USERS, C.USER_ID)
    assert users[C.USER_ID].to_pylist() == ["U1", "U2"]
    assert users[C.LOCALE].to_pylist() == ["en-US", "en-US"]  # the first row of a repeated id wins
    assert users["age_band"].to_pylist() == ["25-34", "\ufffd\ufffd"]  # repaired, not fatal
    assert report.problems == {"null_user_id": 1, "duplicate_user_id": 1}
    assert [(r["reason"], r["source_row"]) for r in report.rejects] == [("null_user_id", 1), ("duplicate_user_id", 2)]
    assert report.repaired_text == {"age_band": 1}

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import columns as C
from factory.inputs import PAIRS, PRODUCTS, USERS, InputError, check_schema, read_lookup_table
from factory.storage import resolve


def test_sample_data_meets_the_contract(sample_dir):
    for name, contract in (("pairs", PAIRS), ("users", USERS), ("products", PRODUCTS)):
        assert check_schema(resolve(str(sample_dir / f"{name}.parquet")), contract)


def test_sample_data_is_deterministic_and_bilingual(tmp_path, sample_dir):
    from factory import sample_data

    sample_data.generate(tmp_path)
    for name in ("pairs", "users", "products"):
        assert pq.read_table(tmp_path / f"{name}.parquet").equals(
            pq.read_table(sample_dir / f"{name}.parquet")
        )
    users = pq.read_table(sample_dir / "users.parquet").to_pylist()
    products = pq.read_table(sample_dir / "products.parquet").to_pylist()
    assert 200 <= len(users) <= 500 and 150 <= len(products) <= 300
    assert any(u["locale"] == "zh-CN" for u in users)
    assert any(
        p["currency"] == "CNY" and any("\u4e00" <= ch <= "\u9fff" for ch in p["title"]) for p in products
    )
    assert all(u["interests"] for u in users)


def test_missing_column_names_input_file_and_column(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "sku": ["p1"]}), path)
    with pytest.raises(InputError) as err:
        check_schema(resolve(str(path)), PAIRS)
    msg = str(err.value)
    assert msg.startswith("pairs:") and str(path) in msg and "product_id" in msg and "sku" in msg


def test_wrong_type_names_the_column(tmp_path):
    path = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user_id": ["u1"], "locale": ["en-US"], "interests": ["hiking"]}), path)
    with pytest.raises(
        InputError, match=r"users: .*users.parquet: column 'interests' must be a list of strings"
    ):
        check_schema(resolve(str(path)), USERS)


def test_the_bad_file_in_a_folder_is_named(tmp_path):
    good = pa.table({"user_id": ["u1"], "product_id": ["p1"]})
    pq.write_table(good, tmp_path / "part-0.parquet")
    (tmp_path / "part-1.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(good, tmp_path / "_ignored.parquet")
    with pytest.raises(InputError, match=r"pairs: cannot read .*part-1.parquet"):
        check_schema(resolve(str(tmp_path)), PAIRS)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        check_schema(resolve(str(tmp_path / "nope")), PAIRS)
    with pytest.raises(InputError, match="no .parquet files"):
        check_schema(resolve(str(tmp_path)), PAIRS)


def test_lookup_table_drops_null_and_duplicate_keys_and_says_so(tmp_path):
    path = tmp_path / "products.parquet"
    attrs = pa.array(
        [[("material", "wool")], [("material", "silk")], None, None], pa.map_(pa.string(), pa.string())
    )
    table = pa.table(
        {
            "product_id": ["p1", "p1", None, "p2"],
            "title": ["A", "A2", "B", "C"],
            "category": ["c"] * 4,
            "brand": ["b"] * 4,
            "price": pa.array([1, 2, 3, 4], pa.int64()),
            "currency": ["USD"] * 4,
            "description": ["d"] * 4,
            "attributes": attrs,
            "extra_column": [1, 2, 3, 4],
        }
    )
    pq.write_table(table, path)
    out, report = read_lookup_table(resolve(str(path)), PRODUCTS, C.PRODUCT_ID)
    assert out[C.PRODUCT_ID].to_pylist() == ["p1", "p2"]
    assert out["title"].to_pylist() == ["A", "C"]  # the first of a duplicated id wins
    assert report.problems == {"null_product_id": 1, "duplicate_product_id": 1}
    assert report.rows_read == 4 and report.rows_kept == 2
    assert json.loads(out["attributes"][0].as_py()) == {"material": "wool"}
    assert out.schema.field("price").type == pa.float64()
    assert "extra_column" not in out.column_names
    assert out["selling_points"].null_count == 2  # optional column added, typed


def test_checked_input_counts_rows_and_keeps_contract_columns(tmp_path):
    pq.write_table(
        pa.table({"user_id": ["u1", "u2"], "product_id": ["p1", "p2"], "noise": [1, 2]}),
        tmp_path / "a.parquet",
    )
    pq.write_table(
        pa.table({"user_id": ["u3"], "product_id": ["p3"], "channel": ["sms"]}), tmp_path / "b.parquet"
    )
    checked = check_schema(resolve(str(tmp_path)), PAIRS)
    assert checked.rows == 3 and len(checked.files) == 2
    assert checked.columns == ["user_id", "product_id", "channel"]


def test_attributes_of_the_wrong_kind_are_named(tmp_path, sample_dir):
    products = pq.read_table(sample_dir / "products.parquet").slice(0, 2)
    products = products.set_column(
        products.schema.get_field_index("attributes"), "attributes", pa.array([1, 2], pa.int64())
    )
    pq.write_table(products, tmp_path / "products.parquet")
    with pytest.raises(
        InputError, match=r"column 'attributes' must be a map, struct or JSON string, found int64"
    ):
        check_schema(resolve(str(tmp_path / "products.parquet")), PRODUCTS)


def test_a_rejected_lookup_row_names_its_own_file_and_row_across_files(tmp_path):
    """Users in two files: a key repeated in the second file, and a null one,
    are reported with that file and their row in it; the first file's row wins."""
    folder = tmp_path / "users"
    folder.mkdir()

    def users(ids):
        n = len(ids)
        return pa.table({"user_id": ids, "locale": ["en-US"] * n, "interests": [["tea"]] * n})

    pq.write_table(users(["u1", "u2", "u3"]), folder / "part-0.parquet")
    pq.write_table(users(["u4", "u2", None, "u5"]), folder / "part-1.parquet")
    out, report = read_lookup_table(resolve(str(folder)), USERS, C.USER_ID)
    assert out[C.USER_ID].to_pylist() == ["u1", "u2", "u3", "u4", "u5"]
    assert report.rows_read == 7 and report.rows_kept == 5
    assert [
        (r[C.USER_ID], r["reason"], r["source"].rsplit("/", 1)[-1], r["source_row"]) for r in report.rejects
    ] == [
        ("u2", "duplicate_user_id", "part-1.parquet", 1),
        (None, "null_user_id", "part-1.parquet", 2),
    ]

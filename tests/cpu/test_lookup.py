"""KeyIndex answers as pc.index_in does, with the table hashed once."""

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from factory.lookup import KeyIndex


def test_positions_are_index_ins_answer_nulls_and_all():
    keys = pa.chunked_array([["U3", "U1"], ["U2", "用户"]])
    ids = pa.chunked_array([["U2", None, "U9"], ["用户", "U3", "U2"]])
    assert (
        KeyIndex(keys).positions(ids).to_pylist()
        == pc.index_in(ids, value_set=keys).to_pylist()
        == [2, None, None, 3, 0, 2]
    )
    assert KeyIndex(pa.array([], pa.string())).positions(pa.array(["U1"])).to_pylist() == [None]


def test_repeated_keys_are_refused():
    with pytest.raises(ValueError, match="unique"):
        KeyIndex(pa.array(["U1", "U1"]))

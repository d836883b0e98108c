"""Looking ids up in a broadcast table, hashed once per actor.

``pc.index_in`` rebuilds a hash table of its whole value set on every call,
so a stage that looks up each block's ids in the users table paid for
hashing every user once per block: 146 ms per 2,048-row block against 1M
users, against 13 ms with the index built once (this machine, 2026-12-04;
``benchmarks/stage_micro.py`` measures the stages). The users and products
tables stay broadcast (one copy per node in the object store); only the
index is per actor.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


class KeyIndex:
    """Positions of a table's (unique, non-null) keys."""

    def __init__(self, keys: pa.Array | pa.ChunkedArray):
        import pandas as pd

        self._index = pd.Index(keys.to_numpy(zero_copy_only=False), dtype=object)
        if not self._index.is_unique:  # the input checks drop repeated ids; a caller that did not is a bug
            raise ValueError("KeyIndex needs unique keys")

    def __len__(self) -> int:
        return len(self._index)

    def positions(self, ids: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Each id's row in the table (int64), null where the table lacks it:
        what ``pc.index_in(ids, value_set=keys)`` returns."""
        found = self._index.get_indexer(ids.to_numpy(zero_copy_only=False)).astype(np.int64)
        return pa.array(found, mask=found < 0)

"""Each pair meets its user once, in pass 1; from there the row carries it.

Pass 1 puts the user's columns (``C.USER_COLUMNS``, those the users table
has) on every pair, and ``C.USER_FOUND`` (true, or null where the table has
no such user, which ``CheckPairs`` turns into a reason). Staging, the join,
the quality gate and the judge then read the user from the row: none of
them holds the users table.

Two ways to the same rows (``factory.pipeline.staging.with_users`` picks by
the table's size):

- ``AttachUsers``: the table broadcast (one copy per node in the object
  store) and looked up by an index built once per actor. Cheapest while the
  table is small.
- Ray Data's hash join: ``join_key`` on the pairs, ``user_side`` on the
  users, ``Dataset.join``, then ``after_join``. Each reduce task holds only
  its share of the users: at 1M users 0.64x the time and 0.82x the workers'
  memory of the broadcast (benchmarks/RESULTS.md section 15).

Keys are compared as bytes: the pairs are not checked yet, and a user id
that is not valid UTF-8 must reach ``CheckPairs`` (a dead letter), not stop
the block.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from factory import columns as C
from factory.lookup import KeyIndex
from factory.ray_session import deref

JOIN_KEY = "__user_key"


def user_side(users: pa.Table) -> pa.Table:
    """The users table as the pairs meet it: the key (bytes), the user's
    columns, ``USER_FOUND``."""
    present = [c for c in C.USER_COLUMNS if c in users.column_names]
    return pa.table(
        {
            JOIN_KEY: users[C.USER_ID].cast(pa.binary()),
            **{c: users[c] for c in present},
            C.USER_FOUND: pa.array(np.ones(users.num_rows, dtype=bool)),
        }
    )


class AttachUsers:
    """Each pair with its user's columns, from the broadcast table (indexed once per actor)."""

    def __init__(self, users: pa.Table):
        # Ray Data hands constructor arguments through as they are: a ref is fetched here.
        self._users = user_side(deref(users))
        self._index = KeyIndex(self._users[JOIN_KEY])

    def __call__(self, batch: pa.Table) -> pa.Table:
        at = self._index.positions(batch[C.USER_ID].cast(pa.binary()))
        for name in self._users.column_names[1:]:
            batch = batch.append_column(name, self._users[name].take(at))
        return batch


def join_key(batch: pa.Table) -> pa.Table:
    """The pairs' side of the hash join."""
    return batch.append_column(JOIN_KEY, batch[C.USER_ID].cast(pa.binary()))


def after_join(batch: pa.Table) -> pa.Table:
    """The joined rows as ``AttachUsers`` gives them: no key, and the run's
    own types (Ray Data 2.60's join hands back large_string, large_binary and
    large_list columns, which the staged files must not mix with string ones)."""
    batch = batch.drop_columns([JOIN_KEY])
    return batch.cast(pa.schema([pa.field(f.name, _small(f.type)) for f in batch.schema]))


def _small(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(kind):
        return pa.string()
    if pa.types.is_large_binary(kind):
        return pa.binary()
    if pa.types.is_large_list(kind) or pa.types.is_list(kind):
        return pa.list_(_small(kind.value_type))
    return kind

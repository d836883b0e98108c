"""Read the pairs with their provenance and sort out the ones that cannot be served.

``ReadPairs`` reads one row group of one pairs file and adds where each row
came from (file and row number), so a bad row's dead letter says exactly
where to look. ``CheckPairs`` gives every pair a reason it cannot be served,
or none: malformed keys (null, not valid UTF-8, absurdly long, control
characters), ids the lookup tables do not know, a channel no template
serves. (Which rows a good pair owes is settled on the driver afterwards,
where repeated pairs can be seen: ``factory.pipeline.staging``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.dead_letters import UNKNOWN_CHANNEL, UNKNOWN_PRODUCT, UNKNOWN_USER
from factory.inputs import MAX_KEY_BYTES, malformed_reasons
from factory.lookup import KeyIndex
from factory.ray_session import deref
from factory.storage import read_parquet_part


class ReadPairs:
    """One task per (file, row group): the pairs' contract columns, plus
    ``source`` (the file's URI) and ``source_row`` (0-based row in the file).

    String columns are read as binary and checked before they are decoded, so
    a row with broken UTF-8 becomes a dead letter instead of a crash."""

    def __init__(self, fs, columns: Sequence[str], display: dict[str, str]):
        self._fs = fs
        self._columns = list(columns)
        self._display = dict(display)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        tables = []
        for path, group, first, take in zip(
            batch["file"], batch["row_group"], batch["first_row"], batch["take"]
        ):
            table = read_parquet_part(self._fs, path, int(group), self._columns)
            if take < table.num_rows:
                table = table.slice(0, int(take))
            n = table.num_rows
            table = table.append_column(C.SOURCE, pa.array([self._display.get(path, path)] * n, pa.string()))
            table = table.append_column(C.SOURCE_ROW, pa.array(np.arange(first, first + n), pa.int64()))
            tables.append(table)
        return pa.concat_tables(tables, promote_options="permissive")


class CheckPairs:
    """Adds ``reason`` to each pair: null for a pair that can be served.

    The pairs arrive with their users attached (``factory.stages.users``:
    ``USER_FOUND`` null where the users table has no such user); the
    products table arrives once per actor, indexed once."""

    def __init__(self, products: pa.Table, known_channels: Sequence[str]):

        products = deref(products)
        self._products = KeyIndex(products[C.PRODUCT_ID])
        self._known = set(known_channels)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        reasons: list[Optional[str]] = [None] * n
        for name, limit, required in (
            (C.USER_ID, MAX_KEY_BYTES, True),
            (C.PRODUCT_ID, MAX_KEY_BYTES, True),
            (C.CHANNEL, 64, False),
            (C.CAMPAIGN_ID, 64, False),
        ):
            if name not in batch.column_names:
                continue
            found = malformed_reasons(batch[name], name, max_bytes=limit, required=required)
            for i, r in enumerate(found):
                reasons[i] = reasons[i] or r
            if any(r and not r.startswith("null_") for r in found):
                # The dead letter itself must be valid, bounded text.
                batch = batch.set_column(batch.column_names.index(name), name, _shown(batch[name], found))
        # Only well-formed keys are looked up.
        clean = pa.array([i for i in range(n) if reasons[i] is None], pa.int64())
        rows = batch.take(clean)
        product_idx = self._products.positions(rows[C.PRODUCT_ID])
        channels = rows[C.CHANNEL].to_pylist() if C.CHANNEL in rows.column_names else [None] * rows.num_rows
        no_user = pc.is_null(rows[C.USER_FOUND]).to_numpy(zero_copy_only=False)
        no_product = pc.is_null(product_idx).to_numpy(zero_copy_only=False)
        for j, i in enumerate(clean.to_pylist()):
            if no_user[j]:
                reasons[i] = UNKNOWN_USER
            elif no_product[j]:
                reasons[i] = UNKNOWN_PRODUCT
            elif channels[j] and channels[j] not in self._known:
                reasons[i] = UNKNOWN_CHANNEL
        return batch.append_column(C.REASON, pa.array(reasons, pa.string()))


def _shown(column, reasons: list[Optional[str]]) -> pa.Array:
    """``column`` with malformed values made printable: broken UTF-8 replaced,
    over-long values cut to 256 bytes."""
    raw = column.cast(pa.binary()).to_pylist()
    out = []
    for value, reason in zip(raw, reasons):
        if value is None:
            out.append(None)
            continue
        text = value.decode("utf-8", "replace") if reason else value.decode("utf-8")
        if reason and len(text.encode()) > MAX_KEY_BYTES:
            text = text.encode()[:MAX_KEY_BYTES].decode("utf-8", "ignore") + "…"
        out.append(text)
    return pa.array(out, pa.string())

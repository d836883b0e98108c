"""Which rows a pair owes: the one home of that rule. Staging, the join and
the dry run all ask here.

A pair naming a channel of the run owes that channel's variants; a pair
naming no channel owes every channel's; a pair naming a channel the run does
not write owes nothing. The same row owed twice (a repeated pair, or a
channel that another pair of the same user and product already gets) is kept
by the first pair in file order, and a pair left with nothing new is a
``duplicate_pair`` dead letter. A row is keyed under the run's campaign, else
the pair's, else ``default``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C

# Internal columns: the pair's position in its table, the row's place among
# its pair's rows, and the campaign the row is keyed under.
PAIR, ORDER, CAMPAIGN = "__pair", "__order", "__campaign"
DEFAULT_CAMPAIGN = "default"


def fan_out(channel: Optional[str], run_channels: Sequence[str], variants: int) -> list[tuple[str, int]]:
    """The (channel, variant) rows one pair owes, in order (see the module)."""
    wanted = [channel] if channel else list(run_channels)
    return [(ch, v) for ch in wanted if ch in run_channels for v in range(variants)]


def fan_out_rows(
    channels: pa.ChunkedArray | pa.Array, run_channels: Sequence[str], variants: int
) -> pa.Table:
    """``fan_out`` for a column of pairs' channels at once: one row per
    (pair, channel, variant) owed, in pair order, then in ``fan_out``'s order.
    Columns PAIR (the pair's position), ORDER, CHANNEL, VARIANT."""
    run_channels = list(run_channels)
    channels = channels.cast(pa.string())  # an input may hold large_string
    positions = np.arange(len(channels), dtype=np.int64)
    named = pc.fill_null(pc.is_in(channels, value_set=pa.array(run_channels, pa.string())), False).to_numpy(
        zero_copy_only=False
    )
    unnamed = pc.is_null(channels).to_numpy(zero_copy_only=False)
    every = [(c, v) for c in run_channels for v in range(variants)]
    parts = []
    for mask, owed in ((named, None), (unnamed, every)):
        pos = positions[mask]
        k = variants if owed is None else len(owed)
        take = np.repeat(pos, k)
        if owed is None:  # the pair's own channel, each variant
            row_channel = pc.take(channels, pa.array(take))
            row_variant = np.tile(np.arange(variants, dtype=np.int32), len(pos))
        else:
            row_channel = pa.array(
                np.tile(np.array([c for c, _ in owed], dtype=object), len(pos)), pa.string()
            )
            row_variant = np.tile(np.array([v for _, v in owed], dtype=np.int32), len(pos))
        parts.append(
            pa.table(
                {
                    PAIR: take,
                    ORDER: np.tile(np.arange(k, dtype=np.int64), len(pos)),
                    C.CHANNEL: row_channel,
                    C.VARIANT: pa.array(row_variant, pa.int32()),
                }
            )
        )
    rows = pa.concat_tables(parts)
    return rows.take(pc.sort_indices(rows, sort_keys=[(PAIR, "ascending"), (ORDER, "ascending")]))


def row_campaigns(pair_campaigns: pa.ChunkedArray | pa.Array, run_campaign: Optional[str]) -> pa.Array:
    """The campaign each row is keyed under: the run's, else the pair's, else ``default``."""
    if run_campaign:
        return pa.array([run_campaign] * len(pair_campaigns), pa.string())
    return pc.coalesce(pair_campaigns, pa.scalar(DEFAULT_CAMPAIGN, pa.string()))


@dataclass
class Owed:
    """What a table of pairs (in file order) owes.

    ``rows``: the unique rows, in file order: user, product, channel, the
    pair's own campaign id, variant, CAMPAIGN (the key's) and PAIR.
    ``duplicate_pairs``: positions of pairs that owe rows but keep none.
    ``owing_pairs``: positions of pairs that owe at least one row."""

    rows: pa.Table
    duplicate_pairs: pa.Array
    owing_pairs: pa.Array


def owed_rows(
    pairs: pa.Table, run_channels: Sequence[str], variants: int, run_campaign: Optional[str]
) -> Owed:
    """The rows ``pairs`` owe, each kept by the first pair in file order
    (``pairs`` must be in file order; see the module for the rule)."""
    fanned = fan_out_rows(pairs[C.CHANNEL], run_channels, variants)
    at = fanned[PAIR]
    rows = pa.table(
        {
            C.USER_ID: pairs[C.USER_ID].take(at),
            C.PRODUCT_ID: pairs[C.PRODUCT_ID].take(at),
            C.CHANNEL: fanned[C.CHANNEL],
            C.CAMPAIGN_ID: pairs[C.CAMPAIGN_ID].take(at),
            C.VARIANT: fanned[C.VARIANT],
            CAMPAIGN: row_campaigns(pairs[C.CAMPAIGN_ID], run_campaign).take(at),
            PAIR: at,
            ORDER: pa.array(np.arange(len(at), dtype=np.int64)),
        }
    )
    first = rows.group_by(
        [CAMPAIGN, C.USER_ID, C.PRODUCT_ID, C.CHANNEL, C.VARIANT], use_threads=False
    ).aggregate([(ORDER, "min")])[f"{ORDER}_min"]
    kept = rows.take(pc.take(first, pc.sort_indices(first))).drop_columns([ORDER])  # in file order
    owing = pc.unique(rows[PAIR])
    duplicates = owing.filter(pc.invert(pc.is_in(owing, value_set=pc.unique(kept[PAIR]))))
    return Owed(rows=kept, duplicate_pairs=duplicates, owing_pairs=owing)

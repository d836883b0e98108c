"""Join pairs with user and product profiles and fan out channels and variants."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.dead_letters import NULL_PRODUCT_ID, NULL_USER_ID, UNKNOWN_CHANNEL, UNKNOWN_PRODUCT, UNKNOWN_USER
from factory.lookup import KeyIndex
from factory.ray_session import deref


class JoinProfiles:
    """Pairs in, one row per (pair, channel, variant) out, profiles attached.

    A pair the tables cannot serve comes out once, with ``reason`` set and no
    profile, so the driver can send it to the dead letters; good rows have
    ``reason`` null. The lookup tables arrive once per worker (constructor),
    and the join itself is vectorized (an index built once per actor, then ``take``).

    ``users``: the users table to look each pair's user up in, or None when
    the rows carry their user's columns (``C.USER_COLUMNS``: the run's staged
    rows, which pass 1 gave their users; factory/stages/users.py).
    """

    def __init__(
        self,
        users: Optional[pa.Table],
        products: pa.Table,
        channels: Sequence[str],
        known_channels: Sequence[str],
        variants: int,
        campaign: Optional[str],
        run_id: str = "",
    ):

        # Ray resolves top-level ObjectRefs for tasks, but Ray Data hands
        # constructor arguments through its own wrapper: resolve here.
        self._users = deref(users)
        self._products = deref(products)
        self._user_index = KeyIndex(self._users[C.USER_ID]) if self._users is not None else None
        self._product_index = KeyIndex(self._products[C.PRODUCT_ID])
        self._channels = list(channels)
        self._known = set(known_channels)
        self._variants = variants
        self._campaign = campaign
        self._run_id = run_id

    def __call__(self, batch: pa.Table) -> pa.Table:
        # Imported here: the pipeline package imports the stages.
        from factory.pipeline.owed import fan_out, row_campaigns

        n = batch.num_rows
        user_ids, product_ids = batch[C.USER_ID], batch[C.PRODUCT_ID]
        user_idx = self._user_index.positions(user_ids) if self._user_index is not None else None
        product_idx = self._product_index.positions(product_ids)
        pair_channels = batch[C.CHANNEL].to_pylist() if C.CHANNEL in batch.column_names else [None] * n
        campaigns = batch[C.CAMPAIGN_ID].to_pylist() if C.CAMPAIGN_ID in batch.column_names else [None] * n

        reasons = _reasons(user_ids, product_ids, user_idx, product_idx, pair_channels, self._known)
        # Rows staged by pass 1 already name their channel and variant: no fan-out.
        given_variants = batch[C.VARIANT].to_pylist() if C.VARIANT in batch.column_names else None

        # Fan out (factory/pipeline/owed.py): dead pairs come out once, so a
        # bad pair is one dead letter, not five.
        rows, out_channels, out_variants, out_reasons = [], [], [], []
        for i in range(n):
            if reasons[i] is not None:
                owed = [(pair_channels[i], 0)]
            elif given_variants is not None:
                owed = [(pair_channels[i], given_variants[i])]
            else:
                owed = fan_out(pair_channels[i], self._channels, self._variants)
            for channel, variant in owed:
                rows.append(i), out_channels.append(channel), out_variants.append(variant)
                out_reasons.append(reasons[i])

        take = pa.array(rows, pa.int64())
        out = {
            C.USER_ID: user_ids.take(take),
            C.PRODUCT_ID: product_ids.take(take),
            C.CHANNEL: pa.array(out_channels, pa.string()),
            C.CAMPAIGN_ID: row_campaigns(pa.array(campaigns, pa.string()), self._campaign).take(take),
            C.VARIANT: pa.array(out_variants, pa.int32()),
            C.REASON: pa.array(out_reasons, pa.string()),
        }
        out[C.ROW_ID] = pa.array(
            [
                row_id(self._run_id, c, u, p, ch, v)
                for c, u, p, ch, v in zip(
                    out[C.CAMPAIGN_ID].to_pylist(),
                    out[C.USER_ID].to_pylist(),
                    out[C.PRODUCT_ID].to_pylist(),
                    out_channels,
                    out_variants,
                )
            ],
            pa.string(),
        )
        # A staged row's experiment and arm (factory/pipeline/experiment.py) ride along.
        for col in (C.EXPERIMENT_ID, C.ARM):
            if col in batch.column_names:
                out[col] = batch[col].take(take)
        # Dead rows carry null indexes: take() yields nulls for them.
        u = user_idx.take(take) if user_idx is not None else None
        p = product_idx.take(take)
        for col in C.USER_COLUMNS:
            out[col] = self._users[col].take(u) if self._users is not None else batch[col].take(take)
        for col in C.PRODUCT_FIELDS:
            if col in self._products.column_names:
                out[col] = self._products[col].take(p)
        return pa.table(out)


def row_id(
    run_id: str,
    campaign: Optional[str],
    user: Optional[str],
    product: Optional[str],
    channel: Optional[str],
    variant: int,
) -> str:
    """80 bits of sha256 over the row's identity: stable across processes and attempts."""
    key = "\x1f".join(
        str(x) if x is not None else "\x00" for x in (run_id, campaign, user, product, channel, variant)
    )
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _reasons(user_ids, product_ids, user_idx, product_idx, pair_channels, known) -> list[Optional[str]]:
    null_user = pc.is_null(user_ids).to_numpy(zero_copy_only=False)
    null_product = pc.is_null(product_ids).to_numpy(zero_copy_only=False)
    # No users table: the rows carry their (known) users.
    no_user = (
        pc.is_null(user_idx).to_numpy(zero_copy_only=False)
        if user_idx is not None
        else np.zeros(len(null_user), dtype=bool)
    )
    no_product = pc.is_null(product_idx).to_numpy(zero_copy_only=False)
    reasons: list[Optional[str]] = [None] * len(null_user)
    for i in np.flatnonzero(null_user | null_product | no_user | no_product):
        if null_user[i]:
            reasons[i] = NULL_USER_ID
        elif null_product[i]:
            reasons[i] = NULL_PRODUCT_ID
        elif no_user[i]:
            reasons[i] = UNKNOWN_USER
        else:
            reasons[i] = UNKNOWN_PRODUCT
    for i, ch in enumerate(pair_channels):
        if reasons[i] is None and ch and ch not in known:
            reasons[i] = UNKNOWN_CHANNEL
    return reasons

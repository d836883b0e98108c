"""An order-independent fingerprint of a set of row ids: what lets the driver
check "every owed row written exactly once" from file footers, not from every id.

A fingerprint is the count and two 64-bit sums (mod 2**64) over the rows: of
each row id's first 64 bits (ids are sha256 digests, ``stages.join.row_id``)
and of a splitmix64 mix of all its bits. Sums do not care about order or about
which file a row is in, so per-file fingerprints add up to the run's. A
missing, duplicated or foreign row changes the count or a sum; two errors that
cancel in both sums at once are about as likely as a 128-bit collision.

Each written file carries its own in its Parquet footer (``factory/footer.py``),
so a resumed process adds up what earlier ones wrote by reading footers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

_MASK = (1 << 64) - 1


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # wrapping is the point
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class Fingerprint:
    rows: int = 0
    head: int = 0  # sum of each id's first 64 bits
    mixed: int = 0  # sum of a mix of each id's bits

    @classmethod
    def of(cls, ids) -> Fingerprint:
        """The fingerprint of ``ids`` (hex row ids: an Arrow array or a list)."""
        values = ids.to_pylist() if isinstance(ids, (pa.Array, pa.ChunkedArray)) else list(ids)
        if not values:
            return cls()
        head = np.array([int(v[:16], 16) for v in values], dtype=np.uint64)
        tail = np.array([int(v[16:] or "0", 16) for v in values], dtype=np.uint64)
        mixed = _splitmix64(head ^ _splitmix64(tail))
        return cls(len(values), int(head.sum(dtype=np.uint64)), int(mixed.sum(dtype=np.uint64)))

    def __add__(self, other: Fingerprint) -> Fingerprint:
        return Fingerprint(
            self.rows + other.rows, (self.head + other.head) & _MASK, (self.mixed + other.mixed) & _MASK
        )

    def text(self) -> str:
        return f"{self.rows}:{self.head:016x}:{self.mixed:016x}"

    @classmethod
    def parse(cls, text: Optional[bytes | str]) -> Optional[Fingerprint]:
        if not text:
            return None
        rows, head, mixed = (text.decode() if isinstance(text, bytes) else text).split(":")
        return cls(int(rows), int(head, 16), int(mixed, 16))

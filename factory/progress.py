"""Progress while a run streams: one log line a minute, and a series for the report.

Ray Data's progress bars show each operator; this adds what a person on call
asks: how many of the rows owed are done, how fast, and when it will end.
Stages after the quality gate report finished rows and output tokens to one
small actor (``ProgressCounter``, no CPU reserved); a driver thread reads it
every ``every_seconds`` and logs a line. The same samples go to the summary
(``progress``), where the run report draws throughput over time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C

logger = logging.getLogger(__name__)


class ProgressCounter:
    """Rows and output tokens finished so far (a Ray actor, see ``start``)."""

    def __init__(self):
        self._rows = 0
        self._tokens = 0

    def add(self, rows: int, tokens: int) -> None:
        self._rows += rows
        self._tokens += tokens

    def read(self) -> tuple[int, int]:
        return self._rows, self._tokens


def count_finished(batch: pa.Table, counter) -> pa.Table:
    """Called by the gate on each judged block: tells the counter how many rows
    are finished (bound for the copies, not the repair queue) and how many
    output tokens the batch cost. Fire and forget: progress never blocks work."""
    tokens = 0
    if C.NUM_OUTPUT_TOKENS in batch.column_names and batch.num_rows:
        tokens = int(pc.sum(batch[C.NUM_OUTPUT_TOKENS]).as_py() or 0)
    finished = batch.num_rows
    if C.ROUTE in batch.column_names and batch.num_rows:
        finished = int(pc.sum(pc.equal(batch[C.ROUTE], C.ROUTE_COPIES).cast(pa.int64())).as_py() or 0)
    counter.add.remote(finished, tokens)
    return batch


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ProgressLog:
    """Driver side: owns the counter actor, logs a line every ``every_seconds``
    and keeps the samples. Use as a context manager around the passes."""

    def __init__(self, total: int, every_seconds: float = 60.0, already_done: int = 0):
        self.total = total
        self.every = every_seconds
        self.already_done = already_done  # rows an earlier process wrote (resume)
        self.samples: list[dict[str, Any]] = []
        self.counter = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = 0.0
        self._phase = "starting"

    def __enter__(self) -> ProgressLog:
        import ray

        self.counter = ray.remote(num_cpus=0)(ProgressCounter).remote()
        self._started = time.time()
        self._thread = threading.Thread(target=self._loop, name="progress-log", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample(log=False)

    def phase(self, name: str) -> None:
        """Name what is running now (``first drafts``, ``repair``, ``reuse``)."""
        self._phase = name

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sample(log=True)
            except Exception as exc:  # noqa: BLE001 - progress must never fail a run
                logger.debug("progress sample failed: %s", exc)

    def sample(self, log: bool) -> dict[str, Any]:
        import ray

        rows, tokens = ray.get(self.counter.read.remote(), timeout=30) if self.counter else (0, 0)
        elapsed = max(time.time() - self._started, 1e-9)
        point = {"t": round(elapsed, 1), "phase": self._phase, "rows_done": rows, "output_tokens": tokens}
        self.samples.append(point)
        if log:
            logger.info(self.line(point))
        return point

    def line(self, point: dict[str, Any]) -> str:
        """``progress [first drafts]: 1,200/4,000 rows (30%) | 4.1 rows/s | 96 tok/s | ETA 11m20s``.

        Rows done are finished rows (written to the copies) plus those an
        earlier process wrote; a row sent to the repair queue counts once it
        is repaired. Tokens count every generation, repairs included."""
        rows, elapsed = point["rows_done"], point["t"]
        done = self.already_done + rows
        rate = rows / elapsed
        tokens_rate = point["output_tokens"] / elapsed
        left = max(self.total - done, 0)
        eta = _duration(left / rate) if rate > 0 else "unknown"
        share = f"{100 * done / self.total:.0f}%" if self.total else "-"
        return (
            f"progress [{point['phase']}]: {done:,}/{self.total:,} rows ({share}) | {rate:.1f} rows/s | "
            f"{tokens_rate:.0f} output tok/s | elapsed {_duration(elapsed)} | ETA {eta}"
        )

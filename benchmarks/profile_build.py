"""Benchmark: profile building (jobs/build_profiles.py) on synthetic events.

    .venv/bin/python benchmarks/profile_build.py --events 3000000

Generates a deterministic event log (seeded numpy; ~1 user per 30 events,
0.1% bad events, 1% of searches with personal data), a 20,000-product
catalog and a users table, then runs the build on a local Ray started
beforehand (its start-up is not timed, as under a running cluster). Reports
events/s over the build and the peak memory of the driver and every Ray
process under it (sampled every 0.25 s: summed RSS, which counts shared
object-store pages once per process, and summed PSS, which does not), and
prints a markdown row for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

AS_OF = dt.date(2026, 11, 23)
EVENTS_PER_USER = 30
PRODUCTS = 20_000
CATEGORIES = 20
BRANDS_PER_CATEGORY = 10
ROWS_PER_FILE = 500_000
QUERIES = [
    f"{w} {k}"
    for w in (
        "waterproof",
        "wireless",
        "vegan",
        "linen",
        "trail",
        "cast iron",
        "gift for",
        "lightweight",
        "organic",
        "smart",
    )
    for k in (
        "jacket",
        "earbuds",
        "sunscreen",
        "bedding",
        "shoes",
        "pan",
        "dad",
        "tent",
        "tea",
        "watch",
        "mask",
        "lamp",
        "socks",
        "bag",
        "bottle",
        "knife",
        "speaker",
        "candle",
        "vest",
        "serum",
    )
]
PERSONAL = ["mail me at someone{}@example.com", "call +1 415 555 {:04d}", "order 12345{:07d}"]


def make_catalog(rng: np.random.Generator) -> pa.Table:
    cat = rng.integers(0, CATEGORIES, PRODUCTS)
    brand = cat * BRANDS_PER_CATEGORY + rng.integers(0, BRANDS_PER_CATEGORY, PRODUCTS)
    ids = [f"P{i:06d}" for i in range(PRODUCTS)]
    return pa.table(
        {
            "product_id": ids,
            "title": [f"Brand{b} Product {i}" for i, b in enumerate(brand)],
            "category": [f"category{c}" for c in cat],
            "brand": [f"Brand{b}" for b in brand],
            "price": np.round(rng.uniform(5, 500, PRODUCTS), 2),
            "currency": ["USD"] * PRODUCTS,
            "description": ["A product."] * PRODUCTS,
        }
    )


def make_events(rng: np.random.Generator, n: int, catalog: pa.Table) -> pa.Table:
    users = max(1, n // EVENTS_PER_USER)
    user = rng.integers(0, users, n)
    kind = rng.choice(np.array(["view", "search", "add_to_cart", "purchase"]), n, p=[0.6, 0.2, 0.13, 0.07])
    # Each user mostly browses one neighbourhood of the catalog (its favourite category).
    home = (user * 7919) % PRODUCTS
    near = (home + rng.integers(0, 200, n)) % PRODUCTS
    product = np.where(rng.random(n) < 0.8, near, rng.integers(0, PRODUCTS, n))
    product_ids = np.array(catalog["product_id"].to_pylist(), dtype=object)[product]
    queries = np.array(QUERIES, dtype=object)[rng.integers(0, len(QUERIES), n)]
    personal = np.flatnonzero((kind == "search") & (rng.random(n) < 0.01))
    for i in personal:
        queries[i] = PERSONAL[i % len(PERSONAL)].format(i % 10_000)
    end = int(
        dt.datetime.combine(AS_OF + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc).timestamp()
    )
    ts = (end - rng.integers(1, 90 * 86400, n)) * 1_000_000
    user_ids = np.char.add("U", np.char.zfill(user.astype(str), 8)).astype(object)
    is_search = kind == "search"
    # 0.1% bad events, spread over the four kinds of fault.
    bad = np.flatnonzero(rng.random(n) < 0.001)
    fault = bad % 4
    kind = kind.astype(object)
    kind[bad[fault == 0]] = "click"
    user_ids[bad[fault == 1]] = None
    ts[bad[fault == 2]] = end * 1_000_000 + 86_400_000_000
    product_ids[bad[fault == 3]] = "P999999"
    kind[bad[fault == 3]] = "view"
    is_search[bad[fault == 3]] = False
    return pa.table(
        {
            "user_id": pa.array(user_ids, pa.string()),
            "event_type": pa.array(kind, pa.string()),
            "product_id": pa.array(np.where(is_search, None, product_ids), pa.string()),
            "query": pa.array(np.where(is_search, queries, None), pa.string()),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    )


def write_inputs(folder: Path, n: int) -> dict[str, str]:
    rng = np.random.default_rng(0)
    catalog = make_catalog(rng)
    events = make_events(rng, n, catalog)
    (folder / "events").mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, n, ROWS_PER_FILE)):
        pq.write_table(
            events.slice(start, ROWS_PER_FILE),
            folder / "events" / f"part-{k:04d}.parquet",
            row_group_size=125_000,
        )
    pq.write_table(catalog, folder / "products.parquet")
    users = max(1, n // EVENTS_PER_USER)
    pq.write_table(
        pa.table(
            {
                "user_id": [f"U{i:08d}" for i in range(0, users, 2)],
                "locale": ["en-US"] * len(range(0, users, 2)),
                "loyalty_tier": ["gold"] * len(range(0, users, 2)),
            }
        ),
        folder / "users.parquet",
    )
    return {
        "events": str(folder / "events"),
        "products": str(folder / "products.parquet"),
        "users": str(folder / "users.parquet"),
    }


class PeakMemory:
    """Samples the summed RSS and PSS of this process and all its descendants."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak_rss = self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        rss = pss = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument(
        "--workdir", help="Where to write inputs and output (default: a temporary folder, removed)."
    )
    args = ap.parse_args()

    import ray

    from jobs import build_profiles

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench-profiles-"))
    t0 = time.time()
    paths = write_inputs(folder, args.events)
    generated = time.time() - t0
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        with PeakMemory() as mem:
            t1 = time.time()
            code = build_profiles.main(
                [
                    "--events",
                    paths["events"],
                    "--products",
                    paths["products"],
                    "--users",
                    paths["users"],
                    "--output",
                    str(folder / "profiles"),
                    "--as-of",
                    AS_OF.isoformat(),
                ]
            )
            seconds = time.time() - t1
    finally:
        ray.shutdown()
    if code != 0:
        print(f"build failed with exit status {code}", file=sys.stderr)
        return code
    profiles = sum(pq.read_metadata(f).num_rows for f in (folder / "profiles").glob("part-*.parquet"))
    files = len(list((folder / "profiles").glob("part-*.parquet")))
    gib = 1024**3
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / gib:.0f} GiB"
    print(f"\ngenerated {args.events:,} events in {generated:.1f} s under {folder}")
    print(
        "| events | profiles | files | build s | events/s | peak RSS driver+Ray | peak PSS driver+Ray "
        "| machine | date |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    print(
        f"| {args.events:,} | {profiles:,} | {files} | {seconds:.1f} | {args.events / seconds:,.0f} | "
        f"{mem.peak_rss / gib:.2f} GiB | {mem.peak_pss / gib:.2f} GiB | {machine} | "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC |"
    )
    if not args.workdir:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

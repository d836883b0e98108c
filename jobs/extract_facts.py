"""Product-facts job: extract selling points and normalized attributes for the
products whose content changed since the last run; reuse the rest.

    python jobs/extract_facts.py --products s3://shop-data/catalog/ --facts s3://shop-data/facts/

Exit status: 0 done (failures of single products are counted, not fatal),
2 a setting or input error found before any engine time.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Optional, Sequence

import pyarrow as pa
from factory import columns as C
from factory import errors, inputs, model, sample_data
from factory.config import EngineConfig
from factory.facts.extract import extract_facts
from factory.facts.store import FactsStore
from factory.preflight import check_place
from factory.storage import resolve


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = errors.JobParser(prog="extract_facts", description=__doc__.split("\n\n")[0])
    p.add_argument("--products", help="Catalog: Parquet file or folder, local or s3:// (default: bundled sample)")
    p.add_argument("--facts", required=True, help="Facts table: local folder or s3://bucket/prefix")
    p.add_argument("--model", default=model.BUNDLED_MODEL, help="Model folder, s3:// folder or hub id")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (MinIO, R2, a test server)")
    p.add_argument("--s3-region", default="us-east-1")
    p.add_argument("--limit", type=int, help="Only the first N products (smoke runs)")
    p.add_argument("--retry-failed", action="store_true",
                   help="Extract again products whose earlier extraction failed (default: keep the failure)")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--batch-size", type=int, default=32, help="Rows per engine batch")
    return p.parse_args(argv)


@dataclass
class Prepared:
    products: pa.Table
    store: FactsStore
    engine: EngineConfig
    model_source: str


def prepare(args: argparse.Namespace) -> Prepared:
    """Every check that can fail before the engine: settings, the catalog, the model, the facts table."""
    if args.limit is not None and args.limit < 1:
        raise errors.UsageError(f"--limit: {args.limit} is out of range: must be at least 1")
    if args.batch_size < 1:
        raise errors.UsageError(f"--batch-size: {args.batch_size} is out of range: must be at least 1")
    where = dict(s3_endpoint=args.s3_endpoint, s3_region=args.s3_region)
    check_place(args.products, "--products", where)
    check_place(args.facts, "--facts", where, write=True)
    products_uri = args.products or str(sample_data.generate(model.cache_root() / "sample_data").products)
    products, _ = inputs.read_lookup_table(resolve(products_uri, **where), inputs.PRODUCTS, C.PRODUCT_ID)
    if args.limit is not None:
        products = products.slice(0, args.limit)
    store = FactsStore(resolve(args.facts, **where))
    store.read([C.PRODUCT_ID])  # an unreadable facts table fails here, not after the engine
    return Prepared(products, store, EngineConfig(device=args.device, batch_size=args.batch_size),
                    model.resolve_model(args.model, where))


def execute(args: argparse.Namespace, prepared: Prepared) -> str:
    report = extract_facts(prepared.products, prepared.store, prepared.engine, prepared.model_source,
                           prepared.engine.device, model_name=model.display_name(args.model),
                           retry_failed=args.retry_failed)
    reasons = Counter(report.failed_by_reason).most_common()
    lines = [f"Facts for {report.products} product(s) at {prepared.store.location.uri}",
             f"  reused:    {report.reused}" + (f"  ({report.reused_failed} earlier failure(s), not retried)"
                                                if report.reused_failed else ""),
             f"  extracted: {report.extracted}",
             f"  failed:    {report.failed}" + ("  " + "  ".join(f"{r}={n}" for r, n in reasons) if reasons else "")]
    lines += [f"  written:   {uri}" for uri in report.parts]
    return "\n".join(lines)


def run(argv: Optional[Sequence[str]]) -> int:
    args = parse_args(argv)
    prepared = prepare(args)  # every mistake exits 2 here, before Ray or the engine
    try:
        print(execute(args, prepared))
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    return errors.EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    return errors.job_main("extract_facts", lambda _log_file: run(argv))


if __name__ == "__main__":  # vLLM spawns an engine process: this guard is required
    sys.exit(main())

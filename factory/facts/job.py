"""The product-facts job (jobs/extract_facts.py): its settings, the checks that
run before any engine time, and the run itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from factory import columns as C
from factory import inputs, model, sample_data
from factory.config import EngineConfig
from factory.facts.store import FactsStore


class FactsJobConfig(BaseModel):
    """Everything one facts run needs; validated before Ray starts."""

    model_config = ConfigDict(extra="forbid")

    products: Optional[str] = Field(
        default=None,
        description="Catalog: Parquet file or folder, local or s3://. Default: the bundled sample.",
    )
    facts: str = Field(description="Facts table: local folder or s3://bucket/prefix.")
    model: str = Field(default=model.BUNDLED_MODEL, description="Model folder, s3:// folder or hub id.")
    s3_endpoint: Optional[str] = Field(
        default=None, description="S3 endpoint URL (MinIO, R2, a test server)."
    )
    s3_region: str = Field(default="us-east-1", description="Region for S3 requests.")
    limit: Optional[int] = Field(default=None, ge=1, description="Only the first N products (smoke runs).")
    retry_failed: bool = Field(
        default=False,
        description="Extract again products whose earlier extraction failed (default: keep the failure).",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig)


@dataclass
class Prepared:
    products: pa.Table
    store: FactsStore
    model_source: str


def prepare(config: FactsJobConfig) -> Prepared:
    """Every check that can fail before the engine: the catalog, the model, the facts table."""
    from factory.preflight import check_place
    from factory.storage import resolve

    where = dict(s3_endpoint=config.s3_endpoint, s3_region=config.s3_region)
    check_place(config.products, "--products", where)
    check_place(config.facts, "--facts", where, write=True)
    products_uri = config.products or str(sample_data.generate(model.cache_root() / "sample_data").products)
    products, report = inputs.read_lookup_table(resolve(products_uri, **where), inputs.PRODUCTS, C.PRODUCT_ID)
    report.log()
    if config.limit is not None:
        products = products.slice(0, config.limit)
    store = FactsStore(resolve(config.facts, **where))
    store.read([C.PRODUCT_ID])  # an unreadable facts table fails here, not after the engine
    return Prepared(products, store, model.resolve_model(config.model, where))


def run(config: FactsJobConfig) -> str:
    """Extract what changed, reuse the rest; the report's lines."""
    from factory.facts.extract import extract_facts

    prepared = prepare(config)  # every mistake exits 2 here, before Ray or the engine
    try:
        report = extract_facts(
            prepared.products,
            prepared.store,
            config.engine,
            prepared.model_source,
            config.engine.device,
            model_name=model.display_name(config.model),
            retry_failed=config.retry_failed,
        )
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    reasons = Counter(report.failed_by_reason).most_common()
    lines = [
        f"Facts for {report.products} product(s) at {prepared.store.location.uri}",
        f"  reused:    {report.reused}"
        + (f"  ({report.reused_failed} earlier failure(s), not retried)" if report.reused_failed else ""),
        f"  extracted: {report.extracted}",
        f"  failed:    {report.failed}"
        + ("  " + "  ".join(f"{r}={n}" for r, n in reasons) if reasons else ""),
    ]
    lines += [f"  written:   {uri}" for uri in report.parts]
    return "\n".join(lines)

"""Shape generated rows into the published output schema."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from factory import columns as C

OUTPUT_SCHEMA = pa.schema([
    (C.RUN_ID, pa.string()),
    (C.RUN_DATE, pa.date32()),
    (C.CAMPAIGN_ID, pa.string()),
    (C.USER_ID, pa.string()),
    (C.PRODUCT_ID, pa.string()),
    (C.CHANNEL, pa.string()),
    (C.LOCALE, pa.string()),
    (C.VARIANT, pa.int32()),
    (C.TEXT, pa.string()),
    (C.TEMPLATE_VERSION, pa.string()),
    (C.MODEL, pa.string()),
    (C.NUM_INPUT_TOKENS, pa.int32()),
    (C.NUM_OUTPUT_TOKENS, pa.int32()),
    (C.FINISH_REASON, pa.string()),
    (C.GENERATED_AT, pa.timestamp("us", tz="UTC")),
])
assert tuple(OUTPUT_SCHEMA.names) == C.OUTPUT_COLUMNS

_QUOTES = {'"': '"', "'": "'", "“": "”", "「": "」", "《": "》"}


def clean_text(text: str) -> str:
    """Trim whitespace and one pair of wrapping quotes; small models love both."""
    text = (text or "").strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


class FinalizeRows:
    """Adds run provenance, cleans the text and casts to ``OUTPUT_SCHEMA``."""

    def __init__(self, run_id: str, run_date: dt.date, model: str):
        self._run_id = run_id
        self._run_date = run_date
        self._model = model

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        now = dt.datetime.now(dt.timezone.utc)
        columns = {
            C.RUN_ID: pa.array([self._run_id] * n, pa.string()),
            C.RUN_DATE: pa.array([self._run_date] * n, pa.date32()),
            C.MODEL: pa.array([self._model] * n, pa.string()),
            C.GENERATED_AT: pa.array([now] * n, pa.timestamp("us", tz="UTC")),
            C.TEXT: pa.array([clean_text(t) for t in batch[C.TEXT].to_pylist()], pa.string()),
        }
        arrays = [columns[f.name] if f.name in columns else batch[f.name].cast(f.type) for f in OUTPUT_SCHEMA]
        return pa.table(arrays, schema=OUTPUT_SCHEMA)

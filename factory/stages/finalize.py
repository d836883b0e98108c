"""Shape generated rows into the published output schema."""

from __future__ import annotations

import datetime as dt
import re

import pyarrow as pa

from factory import columns as C
from factory.quality.text import strip_invisible

OUTPUT_SCHEMA = pa.schema(
    [
        (C.ROW_ID, pa.string()),
        (C.RUN_ID, pa.string()),
        (C.RUN_DATE, pa.date32()),
        (C.CAMPAIGN_ID, pa.string()),
        (C.USER_ID, pa.string()),
        (C.PRODUCT_ID, pa.string()),
        (C.CHANNEL, pa.string()),
        (C.LOCALE, pa.string()),
        (C.VARIANT, pa.int32()),
        (C.EXPERIMENT_ID, pa.string()),
        (C.ARM, pa.string()),
        (C.TEXT, pa.string()),
        (C.STATUS, pa.string()),
        (C.REASONS, pa.list_(pa.string())),
        (C.REASON_DETAILS, pa.list_(pa.string())),
        (C.DRAFT, pa.int32()),
        (C.FIRST_DRAFT_REASONS, pa.list_(pa.string())),
        (C.NUMERIC_FIDELITY, pa.float64()),
        (C.COPY_LENGTH, pa.int32()),
        (C.COPY_LENGTH_LIMIT, pa.int32()),
        (C.JUDGE_VERDICT, pa.string()),
        (C.JUDGE_TOKENS, pa.int32()),
        (C.DEDUP_OF, pa.string()),
        (C.TEMPLATE_VERSION, pa.string()),
        (C.MODEL, pa.string()),
        (C.NUM_INPUT_TOKENS, pa.int32()),
        (C.NUM_OUTPUT_TOKENS, pa.int32()),
        (C.NUM_CACHED_TOKENS, pa.int32()),
        (C.FINISH_REASON, pa.string()),
        (C.GENERATED_AT, pa.timestamp("us", tz="UTC")),
    ]
)
assert tuple(OUTPUT_SCHEMA.names) == C.OUTPUT_COLUMNS

_QUOTES = {'"': '"', "'": "'", "“": "”", "「": "」", "《": "》"}
# "Subject: ..." / "Push notification: ..." -- a label the channel does not want.
_LABEL = re.compile(
    r"^(?:subject(?: line)?|e-?mail subject|headline|ad headline|sms|text message|push"
    r"(?: notification)?|notification|copy|recommendation|blurb|标题|短信|推送)\s*[:：]\s*",
    re.IGNORECASE,
)


def clean_text(text: str) -> str:
    """Trim whitespace, a leading channel label and one pair of wrapping
    quotes; small models love all three. Invisible characters (zero-width,
    bidirectional controls; emoji sequences kept) go too: nothing a reader
    cannot see is published (the gate still reports that they were there).
    Nothing else is rewritten: the gate judges what the model wrote."""
    text = strip_invisible(text or "").strip()
    text = _LABEL.sub("", text, count=1).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


# What FinalizeRows stamps on every row as it is written: the run's provenance.
PROVENANCE_COLUMNS = (C.RUN_ID, C.RUN_DATE, C.MODEL, C.GENERATED_AT)


class FinalizeRows:
    """Adds run provenance and casts gated rows to ``OUTPUT_SCHEMA``."""

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
        }
        # Columns a stage may not have set: null (not a first-attempt repair,
        # not a reused generation, no cache figure from the engine, not judged, no experiment).
        for name in (
            C.FIRST_DRAFT_REASONS,
            C.DEDUP_OF,
            C.NUM_CACHED_TOKENS,
            C.JUDGE_VERDICT,
            C.JUDGE_TOKENS,
            C.EXPERIMENT_ID,
            C.ARM,
        ):
            if name not in batch.column_names:
                columns[name] = pa.nulls(n, OUTPUT_SCHEMA.field(name).type)
        arrays = [columns[f.name] if f.name in columns else batch[f.name].cast(f.type) for f in OUTPUT_SCHEMA]
        return pa.table(arrays, schema=OUTPUT_SCHEMA)

"""The review queue: the copies' ``review`` rows with the product facts beside
each copy, what a reviewer checks it against. A sink beside the copies (the
writer writes a file's review rows first, under the copies file's name), so
no pass on the driver gathers them afterwards."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from factory import columns as C
from factory.ray_session import deref

REVIEW_COPY_COLUMNS = (
    C.ROW_ID,
    C.CAMPAIGN_ID,
    C.USER_ID,
    C.PRODUCT_ID,
    C.CHANNEL,
    C.LOCALE,
    C.VARIANT,
    C.TEXT,
    C.REASONS,
    C.REASON_DETAILS,
    C.DRAFT,
    C.FIRST_DRAFT_REASONS,
    C.NUMERIC_FIDELITY,
    C.COPY_LENGTH,
    C.COPY_LENGTH_LIMIT,
    C.TEMPLATE_VERSION,
    C.RUN_ID,
)
REVIEW_DESCRIPTION_CHARS = 1_000


class ReviewRows:
    """Output rows in, their review rows with product facts out (maybe none).

    ``products`` is the run's product table or an object ref to it (fetched
    once per writer task); only the review columns of it are kept."""

    def __init__(self, products):
        self._source = products
        self._products = None

    def _table(self) -> pa.Table:
        if self._products is None:
            products = deref(self._source)
            products = products.select(
                [C.PRODUCT_ID] + [c for c in C.PRODUCT_FIELDS if c in products.column_names]
            )
            if "description" in products.column_names:
                cut = pc.utf8_slice_codeunits(products["description"], 0, REVIEW_DESCRIPTION_CHARS)
                products = products.set_column(products.column_names.index("description"), "description", cut)
            self._products = products
        return self._products

    def __getstate__(self):  # the table is fetched again where the rows are written
        return {"_source": self._source, "_products": None}

    def __call__(self, rows: pa.Table) -> pa.Table:
        review = rows.filter(pc.equal(rows[C.STATUS], C.REVIEW)).select(list(REVIEW_COPY_COLUMNS))
        products = self._table()
        # index_in + take, not Table.join: Acero cannot carry the list columns.
        facts = products.take(pc.index_in(review[C.PRODUCT_ID], value_set=products[C.PRODUCT_ID]))
        for name in facts.column_names[1:]:
            review = review.append_column(name, facts[name])
        return review.sort_by(
            [(C.CHANNEL, "ascending"), (C.PRODUCT_ID, "ascending"), (C.USER_ID, "ascending")]
        )

"""Render each row's chat prompt from its channel's versioned template."""

from __future__ import annotations

import json
from typing import Mapping, Optional

import pyarrow as pa

from factory import columns as C
from factory.prompts import PromptTemplate, format_price


class RenderPrompts:
    """Adds the chat messages (JSON), the token cap and the template version.

    Only the fields the row's template names are read from the row, so a
    profile field no template mentions never reaches the model.
    """

    def __init__(self, templates: Mapping[str, PromptTemplate], max_tokens: Optional[int] = None):
        # max_tokens, when given, overrides every channel's own cap.
        self._templates = dict(templates)
        self._max_tokens = max_tokens

    def __call__(self, batch: pa.Table) -> pa.Table:
        needed = set().union(*(t.fields for t in self._templates.values())) - {"language", "price"}
        cols = {name: batch[name].to_pylist() for name in needed if name in batch.column_names}
        channels = batch[C.CHANNEL].to_pylist()
        locales = batch[C.LOCALE].to_pylist()
        prices, currencies = batch["price"].to_pylist(), batch["currency"].to_pylist()

        messages, caps, versions = [], [], []
        for i, channel in enumerate(channels):
            template = self._templates[channel]
            values = {name: col[i] for name, col in cols.items()}
            values["language"] = locales[i]
            values["price"] = format_price(prices[i], currencies[i])
            messages.append(json.dumps(template.render(values), ensure_ascii=False))
            caps.append(self._max_tokens or template.max_tokens)
            versions.append(template.version)
        return (batch.append_column(C.MESSAGES, pa.array(messages, pa.string()))
                .append_column(C.MAX_TOKENS, pa.array(caps, pa.int32()))
                .append_column(C.TEMPLATE_VERSION, pa.array(versions, pa.string())))

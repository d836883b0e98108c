"""What the extractor may say about a product: the shape of one reply.

``ProductFacts`` is both the parser (pydantic, run on every reply) and, through
``engine_json_schema()``, the constraint the engine decodes under (vLLM
structured output), so a reply that was not cut off always parses. The
validators normalize what the schema cannot express: attribute names lower
case, units spelled one way, repeated points dropped.

Not to be confused with ``factory.quality.rules.ProductFacts``, the gate's
view of a product record.
"""

from __future__ import annotations

import copy
import json
from typing import Annotated, Any

import regex
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

MAX_POINTS = 5
MAX_POINT_CHARS = 120
MAX_ATTRIBUTES = 6
MAX_NAME_CHARS = 32
MAX_VALUE_CHARS = 64
MAX_MATERIALS = 4
MAX_MATERIAL_CHARS = 32

# A point is 1..120 characters with no braces, brackets, angle brackets,
# quotes or backslashes. Said as one pattern (not maxLength plus a pattern,
# which xgrammar cannot combine), so the engine enforces all of it. Without it
# the bundled model answered "{{name}}" five times for most products (seen
# with vLLM and with transformers, greedy).
POINT_PATTERN = rf'^[^{{}}<>\[\]"\\]{{1,{MAX_POINT_CHARS}}}$'
SellingPoint = Annotated[str, StringConstraints(strip_whitespace=True, pattern=POINT_PATTERN)]
Material = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_MATERIAL_CHARS)
]

# Unit spellings -> one canonical form ("10KG", "10 kgs", "10 kilograms" -> "10 kg").
_UNITS = {
    **dict.fromkeys(("kg", "kgs", "kilogram", "kilograms"), "kg"),
    **dict.fromkeys(("g", "gr", "gram", "grams"), "g"),
    **dict.fromkeys(("mg", "milligram", "milligrams"), "mg"),
    **dict.fromkeys(("lb", "lbs", "pound", "pounds"), "lb"),
    **dict.fromkeys(("oz", "ounce", "ounces"), "oz"),
    **dict.fromkeys(("l", "liter", "liters", "litre", "litres"), "l"),
    **dict.fromkeys(("ml", "milliliter", "milliliters", "millilitre", "millilitres"), "ml"),
    **dict.fromkeys(("mm", "millimeter", "millimeters", "millimetre", "millimetres"), "mm"),
    **dict.fromkeys(("cm", "centimeter", "centimeters", "centimetre", "centimetres"), "cm"),
    **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), "m"),
    **dict.fromkeys(("km", "kilometer", "kilometers", "kilometre", "kilometres"), "km"),
    **dict.fromkeys(("in", "inch", "inches", '"'), "in"),
    **dict.fromkeys(("ft", "foot", "feet"), "ft"),
    **dict.fromkeys(("w", "watt", "watts"), "W"),
    **dict.fromkeys(("kw", "kilowatt", "kilowatts"), "kW"),
    **dict.fromkeys(("v", "volt", "volts"), "V"),
    **dict.fromkeys(("mah",), "mAh"),
    **dict.fromkeys(("wh",), "Wh"),
    **dict.fromkeys(("mb",), "MB"),
    **dict.fromkeys(("gb",), "GB"),
    **dict.fromkeys(("tb",), "TB"),
    **dict.fromkeys(("hz",), "Hz"),
    **dict.fromkeys(("°c", "celsius"), "°C"),
    **dict.fromkeys(("°f", "fahrenheit"), "°F"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
}
UNIT_NAMES = frozenset(_UNITS.values())
_MEASURE = regex.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s*(°?[a-zA-Z]+|\")$")
_NAME_JUNK = regex.compile(r"[^\w]+")


def normalize_name(name: str) -> str:
    """``"Water Resistance "`` -> ``"water_resistance"``."""
    return _NAME_JUNK.sub("_", name.strip().lower()).strip("_")


def normalize_value(value: str) -> str:
    """One line; a number with a known unit as ``"<number> <unit>"`` (thousands
    separators dropped: ``"10,000MM"`` -> ``"10000 mm"``)."""
    value = " ".join(value.split())
    m = _MEASURE.match(value)
    if m and m.group(3).lower() in _UNITS:
        number = m.group(1).replace(",", "") + (f".{m.group(2)}" if m.group(2) else "")
        return f"{number} {_UNITS[m.group(3).lower()]}"
    return value


class Attribute(BaseModel):
    """One normalized attribute of the product."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="Attribute name, e.g. material, color, capacity, waterproof_rating.",
    )
    value: str = Field(
        min_length=1,
        max_length=MAX_VALUE_CHARS,
        description="Its value as the product text states it, e.g. recycled nylon, 10000 mm.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        v = normalize_name(v)
        if not v:
            raise ValueError("empty attribute name")
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: str) -> str:
        v = normalize_value(v)
        if not v:
            raise ValueError("empty attribute value")
        return v


class ProductFacts(BaseModel):
    """Factual selling points and normalized attributes of one product."""

    model_config = ConfigDict(extra="forbid")

    selling_points: list[SellingPoint] = Field(
        min_length=1,
        max_length=MAX_POINTS,
        description="Short factual selling points, each stated in the product text.",
    )
    attributes: list[Attribute] = Field(
        default_factory=list, max_length=MAX_ATTRIBUTES, description="Normalized attributes."
    )
    materials: list[Material] = Field(
        default_factory=list, max_length=MAX_MATERIALS, description="Materials the product is made of."
    )

    @field_validator("selling_points", "materials", mode="before")
    @classmethod
    def _drop_blank(cls, v: Any) -> Any:
        # A blank item is noise, not a reason to lose the whole reply.
        return [x for x in v if not isinstance(x, str) or x.strip()] if isinstance(v, list) else v

    @field_validator("selling_points")
    @classmethod
    def _unique_points(cls, v: list[str]) -> list[str]:
        # Small models repeat a point to fill the list; the repeats say nothing.
        seen: dict[str, str] = {}
        for point in v:
            point = " ".join(point.split())
            seen.setdefault(point.casefold(), point)
        return list(seen.values())

    @field_validator("attributes", mode="before")
    @classmethod
    def _drop_empty_attributes(cls, v: Any) -> Any:
        # A name or value that normalizes to nothing ("!!", "  ") loses that
        # attribute, not the whole reply.
        def empty(a: Any) -> bool:
            return isinstance(a, dict) and any(
                isinstance(a.get(k), str) and not normalize_name(a[k]) for k in ("name", "value")
            )

        return [a for a in v if not empty(a)] if isinstance(v, list) else v

    @field_validator("attributes")
    @classmethod
    def _unique_names(cls, v: list[Attribute]) -> list[Attribute]:
        seen: dict[str, Attribute] = {}
        for a in v:
            seen.setdefault(a.name, a)  # the first value of a name wins
        return list(seen.values())

    @field_validator("materials")
    @classmethod
    def _unique_materials(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(m.lower() for m in v))

    def to_json(self) -> str:
        """The stored form: compact, key order fixed, non-ASCII kept."""
        return json.dumps(self.model_dump(), ensure_ascii=False, separators=(",", ":"))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]]), defs)
        return {k: _inline_refs(v, defs) for k, v in node.items() if k not in ("title", "default")}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _require_all(node: Any) -> Any:
    # Every key in every reply: a fixed shape is easier for a small model to
    # follow, and an empty list says "none" as well as a missing key.
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node["required"] = list(node["properties"])
            node["additionalProperties"] = False
        for v in node.values():
            _require_all(v)
    elif isinstance(node, list):
        for v in node:
            _require_all(v)
    return node


def json_schema_for(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema an engine decodes a reply under: ``model``'s without
    ``$ref``s (every backend reads it the same way), every key required.
    The model judge (factory/stages/judge.py) uses it too."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return _require_all(_inline_refs(schema, defs))


def engine_json_schema() -> dict[str, Any]:
    """The JSON schema the engine decodes facts under (``ProductFacts``')."""
    return json_schema_for(ProductFacts)


def engine_json_schema_text() -> str:
    """The schema as JSON text (a row field: Arrow cannot hold a free-form dict).

    Keys keep their order: the grammar backends emit properties in schema
    order, and sorted keys would put ``selling_points`` last."""
    return json.dumps(engine_json_schema(), ensure_ascii=False, separators=(",", ":"))


def facts_text(facts_json: str | None) -> str:
    """Facts as one line for a prompt: ``"Folds flat; Machine washable; color: white; made of: linen"``."""
    if not facts_json:
        return ""
    facts = json.loads(facts_json)
    parts = list(facts.get("selling_points") or [])
    parts += [f"{a['name'].replace('_', ' ')}: {a['value']}" for a in facts.get("attributes") or []]
    if facts.get("materials"):
        parts.append("made of: " + ", ".join(facts["materials"]))
    return "; ".join(parts)

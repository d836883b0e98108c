"""docs/settings.md, written from the nightly job's config fields.

    python -m factory.settings_doc > docs/settings.md     (or: make docs)

tests/cpu/test_settings_doc.py fails when the file and the fields part.
"""

from __future__ import annotations

import datetime as dt
import re
import typing

from pydantic.fields import FieldInfo

from factory.cli import NIGHTLY_FLAGS
from factory.flags import FlagSet, nested_model, plain, shown_default

HEAD = """# Settings of the nightly job

Generated from `factory/config.py` by `python -m factory.settings_doc`; do not edit by hand
(`make docs` rewrites it, and a test fails when it is out of date).

Each setting can be given three ways, the later winning: its default, a YAML file
(`--config job.yaml`; nested settings under `engine:` and `quality:`), and its flag.
A campaign file (`--campaigns-dir`) sets a campaign's own settings between the two.
Settings marked *file only* have no flag: set them in the YAML file.
"""


def type_name(info: FieldInfo) -> str:
    """The setting's type in a reader's words."""
    kind = plain(info.annotation)
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return " | ".join(f"`{v}`" for v in typing.get_args(kind))
    if origin in (list, dict):
        args = ", ".join(type_name(FieldInfo(annotation=a)) for a in typing.get_args(kind))
        return f"{origin.__name__}[{args}]"
    if kind is dt.date:
        return "date (YYYY-MM-DD)"
    return getattr(kind, "__name__", str(kind))


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def rows(flags: FlagSet) -> list[tuple[str, str, str, str, str]]:
    """(setting, flag, type, default, description) for every field, nested models' fields included."""
    with_flag = {s for s, _ in flags.settings()}
    out = []

    def walk(model, prefix: str) -> None:
        for name, info in model.model_fields.items():
            setting = prefix + name
            inner = nested_model(info)
            if inner is not None:
                walk(inner, setting + ".")
                continue
            flag = f"`{flags.flag(setting)}`" if setting in with_flag else "*file only*"
            default = shown_default(info)
            out.append(
                (
                    f"`{setting}`",
                    flag,
                    type_name(info),
                    "" if default is None else f"`{default}`",
                    info.description or "",
                )
            )

    walk(flags.model, "")
    return out


def render(flags: FlagSet = NIGHTLY_FLAGS) -> str:
    lines = [HEAD, "| setting | flag | type | default | what it does |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows(flags)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")

"""Command-line flags made from a pydantic settings model.

A field's name, type, default and description are the flag's: ``run_date``
becomes ``--run-date`` with the field's description as its help, so adding a
setting to a config model is the one edit a new flag needs. Every flag's
argparse default is None, so the caller can tell the flags given from the
ones left to the config file and the model's defaults.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def json_object(text: str) -> dict[str, Any]:
    """A flag's JSON object (a dict field such as ``engine_kwargs``)."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object, e.g. '{\"max_num_seqs\": 64}'")
    return value


def date(text: str) -> dt.date:
    """A flag's date, with the format said when it is not one."""
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (expected YYYY-MM-DD)") from None


def plain(annotation: Any) -> Any:
    """``Optional[X]`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return plain(rest[0])
    return annotation


def nested_model(info: FieldInfo) -> Optional[type[BaseModel]]:
    """The settings model a field holds (``engine: EngineConfig``), else None."""
    kind = plain(info.annotation)
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def shown_default(info: FieldInfo) -> Optional[str]:
    """The default as a user would type it, None when there is none to show."""
    if info.is_required():
        return None
    value = info.get_default(call_default_factory=True)
    if value is None or value == {} or value == [] or isinstance(value, BaseModel):
        return None
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dt.date):
        return None  # a factory's "today": the description says it
    return str(value)


def kind_of(info: FieldInfo) -> dict[str, Any]:
    """argparse keywords for a field's type; ValueError for a type no flag can carry."""
    kind = plain(info.annotation)
    origin = typing.get_origin(kind)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        return {"choices": list(typing.get_args(kind))}
    if kind in (int, float):
        return {"type": kind}
    if kind is str:
        return {}
    if kind is dt.date:
        return {"metavar": "YYYY-MM-DD"}  # the model parses it, and a bad one is a setting error (exit 2)
    if origin is list and plain(typing.get_args(kind)[0]) is str:
        return {"metavar": "A,B"}  # the model's own validator splits the comma list
    if origin is dict:
        return {"type": json_object, "metavar": "JSON"}
    raise ValueError(f"no flag can carry {kind!r}")


@dataclass
class FlagSet:
    """Which fields of a settings model become flags, and under which names.

    ``names``: setting -> flag where they differ (``user_ids`` -> ``--only-users``);
    ``file_only``: settings only a config file sets (structured values);
    ``inline``: nested models whose fields become flags without a prefix
    (``engine.replicas`` -> ``--replicas``), all of them (None) or those listed;
    ``groups``: help sections, title -> settings (the rest go under ``other``);
    ``extra``: argparse keywords added to a setting's flag (``action="append"``).
    """

    model: type[BaseModel]
    names: dict[str, str] = field(default_factory=dict)
    file_only: frozenset[str] = frozenset()
    inline: dict[str, Optional[tuple[str, ...]]] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    other: str = "settings"
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)

    def settings(self) -> list[tuple[str, FieldInfo]]:
        """(dotted setting, field) for every flag, in the model's order."""
        out = []
        for name, info in self.model.model_fields.items():
            if name in self.file_only:
                continue
            if name in self.inline:
                inner, wanted = nested_model(info), self.inline[name]
                out += [
                    (f"{name}.{n}", i) for n, i in inner.model_fields.items() if wanted is None or n in wanted
                ]
            else:
                out.append((name, info))
        return out

    def flag(self, setting: str) -> str:
        return self.names.get(setting) or "--" + setting.rsplit(".", 1)[-1].replace("_", "-")

    def help(self, setting: str, info: FieldInfo) -> str:
        text = " ".join((info.description or "").split())
        default = shown_default(info)
        if default is not None and "default" not in text.lower():
            text += f" (default {default})"
        return text.replace("%", "%%")  # argparse formats help with %

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """One flag per setting, in the groups' order; unknown types fail here, in a test."""
        settings = self.settings()
        grouped = {s for names in self.groups.values() for s in names}
        sections = [*self.groups.items(), (self.other, tuple(s for s, _ in settings if s not in grouped))]
        infos = dict(settings)
        for title, names in sections:
            names = [n for n in names if n in infos]
            if not names:
                continue
            group = parser.add_argument_group(title)
            for setting in names:
                info = infos[setting]
                try:
                    keywords = kind_of(info)
                except ValueError as exc:
                    raise TypeError(
                        f"{self.model.__name__}.{setting}: {exc}; list it in file_only or "
                        "give it a type a flag can carry"
                    ) from None
                if "action" not in keywords and "choices" not in keywords:
                    keywords.setdefault("metavar", setting.rsplit(".", 1)[-1].upper())
                keywords.update(self.extra.get(setting, {}))
                if info.is_required() and "." not in setting:
                    keywords["required"] = True
                group.add_argument(
                    self.flag(setting), dest=setting, default=None, help=self.help(setting, info), **keywords
                )


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"settings.as_of": d}`` -> ``{"settings": {"as_of": d}}``: dotted settings as a model's input."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def parse_settings(flags: FlagSet, parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> Any:
    """A job's flags as its validated settings model. A value the model refuses
    raises UsageError naming the flag the user gave (exit 2, factory/errors.py)."""
    return settings_from(flags, parser, parser.parse_args(argv))


def settings_from(flags: FlagSet, parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """Parsed flags as the validated settings model; for a job that passes the flags
    it does not know on (``parse_known_args``), as the backfill does."""
    from pydantic import ValidationError

    from factory.errors import UsageError, flag_names, settings_lines

    given = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return flags.model.model_validate(nest(given))
    except ValidationError as exc:
        names = flag_names(parser)
        said = {k: names[k] for k in given if k in names}
        raise UsageError(*settings_lines(exc, flags.model, said)) from None

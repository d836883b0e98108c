"""What a job says when it cannot run, and the exit code it returns.

Every job in ``jobs/`` ends through ``job_main``: one table (``EXIT_CODES``)
decides the status, and a user's mistake is told in one or two lines that
name the flag or the file (with key and line where there is one), say what is
wrong and what would be right. The full traceback of a failure goes to the
job's log file, whose path the last line gives; the console stays readable.

    0  done (published, or already was)
    1  failed: storage that kept failing after its retries (busy or down,
       not refusing: worth a rerun), or a bug
    2  a flag, a config or campaign file, a path, a store or a model folder
       that cannot work, found before Ray or an engine starts
    3  another process published the run first
    4  the written rows are not exactly the expected ones; nothing published
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFLICT, EXIT_INCOMPLETE = 0, 1, 2, 3, 4

logger = logging.getLogger(__name__)


class UsageError(ValueError):
    """A mistake the user can fix (a flag, a file, a path, a store, a model
    folder), found before any engine time. ``lines`` are what the console shows."""

    def __init__(self, *lines: str):
        self.lines = [part for line in lines for part in str(line).splitlines() if part.strip()]
        super().__init__("\n".join(self.lines))


class StorageError(OSError):
    """A store that still failed after its retries: the object and the store's answer."""

    def __init__(self, uri: str, answer: str, code: str = ""):
        self.uri, self.answer, self.code = uri, answer, code
        super().__init__(f"{uri}: {answer}")

    def __reduce__(self):  # raised in Ray workers: pickled with its own arguments
        return type(self), (self.uri, self.answer, self.code)


class Conflict(RuntimeError):
    """Another process did what this one was about to (exit 3)."""


class Incomplete(RuntimeError):
    """A result that is not whole; nothing was published (exit 4)."""


class Failed(RuntimeError):
    """The job ran and could not finish; what it says is the whole story (exit 1)."""


def _validation_error() -> type:
    from pydantic import ValidationError

    return ValidationError


# The one table: the first kind that matches decides the exit status.
EXIT_CODES: tuple[tuple[Callable[[], type], int], ...] = (
    (lambda: UsageError, EXIT_USAGE),
    (_validation_error, EXIT_USAGE),
    (lambda: FileNotFoundError, EXIT_USAGE),
    (lambda: Conflict, EXIT_CONFLICT),
    (lambda: Incomplete, EXIT_INCOMPLETE),
    (lambda: StorageError, EXIT_FAILED),
    (lambda: Failed, EXIT_FAILED),
)


def exit_code(exc: BaseException) -> Optional[int]:
    """The status for ``exc``; None for an error no rule knows (a bug: it propagates)."""
    for kind, code in EXIT_CODES:
        if isinstance(exc, kind()):
            return code
    return EXIT_FAILED if storage_failure(exc) else None


# --------------------------------------------------------------------------- storage failures

# pyarrow names the object in its own words: "... key 'a/b' in bucket 'x': AWS Error ...".
_PYARROW_OBJECT = re.compile(r"(?:key '(?P<key>[^']*)' in )?bucket '(?P<bucket>[^']+)'")
_STORAGE_MARKERS = ("AWS Error", "curlCode")


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and what it wraps: Python's chain and Ray's task errors (``cause``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


def storage_failure(exc: BaseException) -> Optional[StorageError]:
    """``exc`` as a StorageError when a store's answer is behind it, else None."""
    for cause in _causes(exc):
        if isinstance(cause, StorageError):
            return cause
        if type(cause).__module__.startswith("ray."):
            # Ray's wrapper (``RayTaskError(OSError)`` is an OSError too): its
            # text starts with the worker's name; what it wraps comes next.
            continue
        if type(cause).__module__.startswith(("botocore", "boto3")):
            return StorageError(_botocore_object(cause), _first_line(str(cause)))
        if isinstance(cause, OSError):
            found = _pyarrow_failure(str(cause))
            if found:
                return found
    return _failure_in_worker_traceback(exc)


def _pyarrow_failure(text: str) -> Optional[StorageError]:
    """pyarrow's words for a store's failure, naming the object where they do."""
    if not any(m in text for m in _STORAGE_MARKERS):
        return None
    text = _first_line(text)
    found = _PYARROW_OBJECT.search(text)
    uri = f"s3://{found['bucket']}/{found['key'] or ''}".rstrip("/") if found else "S3"
    return StorageError(uri, text[found.end() :].lstrip(": ") if found else text)


# An exception line of a Python traceback: "module.Type: message".
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*): (?P<message>.+)$")


def _failure_in_worker_traceback(exc: BaseException) -> Optional[StorageError]:
    """A store's failure told only in the text of a Ray worker's traceback.

    Ray Data (checked against 2.60) raises a map stage's exception as
    ``UserCodeException(...) from original``, and the original does not
    survive the trip to the driver (``__cause__`` is not pickled): what the
    worker met is left only in the traceback text Ray puts in the error's
    message. Our own StorageError there names the object, so it wins."""
    ray_errors = [c for c in _causes(exc) if type(c).__module__.startswith("ray.")]
    found: list[StorageError] = []
    for error in ray_errors:
        for line in str(error).splitlines():
            match = _EXCEPTION_LINE.match(line.strip())
            if not match:
                continue
            kind, message = match["type"], match["message"]
            if kind.rsplit(".", 1)[-1] == StorageError.__name__ and ": " in message:
                return StorageError(*message.split(": ", 1))
            if kind.startswith("botocore."):
                found.append(StorageError("S3", message))
            elif kind.endswith("Error"):
                found.extend(filter(None, [_pyarrow_failure(message)]))
    return found[0] if found else None


def _botocore_object(exc: BaseException) -> str:
    kwargs = getattr(exc, "kwargs", None) or {}
    if "endpoint_url" in kwargs:
        return kwargs["endpoint_url"]
    operation = getattr(exc, "operation_name", None)
    return f"S3 {operation}" if operation else "S3"


def _first_line(text: str) -> str:
    line = next((part.strip() for part in text.splitlines() if part.strip()), text.strip())
    return line[:400]


# --------------------------------------------------------------------------- settings in the user's words


def nearest(word: str, known: Iterable[str]) -> Optional[str]:
    """The known name closest to ``word``, if any is close. Compared without
    leading dashes: every flag shares "--", which made "--candidates" look
    like "--run-date"."""
    bare = {k.lstrip("-"): k for k in known}
    found = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1, cutoff=0.6)
    return bare[found[0]] if found else None


_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}
_KINDS = {
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "int_type": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "list_type": "a list",
    "dict_type": "a mapping of settings",
    "model_type": "a mapping of settings",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "date_type": "a date (YYYY-MM-DD)",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def problem(err: dict[str, Any], known: Sequence[str] = (), hints: Optional[dict[str, str]] = None) -> str:
    """One pydantic error as what is wrong and what would be right."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        hint = (hints or {}).get(key) or nearest(key, known)
        return f"unknown setting {key!r}" + (f" (did you mean {hint!r}?)" if hint else "")
    if kind == "missing":
        return "required, but missing"
    if kind in _BOUNDS:
        name, words = _BOUNDS[kind]
        message = f"{_shown(value)} is out of range: must be {words} {ctx.get(name)}"
    elif kind in _KINDS:
        message = f"{_shown(value)} is not {_KINDS[kind]}"
    elif kind == "literal_error":
        message = f"{_shown(value)} is not one of {ctx.get('expected')}"
    elif kind == "string_too_long":
        message = f"too long: at most {ctx.get('max_length')} characters"
    elif kind == "value_error":
        message = err["msg"].removeprefix("Value error, ")
    else:
        message = f"{err['msg']} (got {_shown(value)})"
    if isinstance(value, bool) and kind != "value_error":
        message += '; YAML reads unquoted off/on/no/yes as true/false: write "off"'
    return message


def validation_lines(
    exc,
    where: Callable[[tuple], str],
    known: Callable[[tuple], Sequence[str]],
    hints: Optional[dict[str, str]] = None,
) -> list[str]:
    """One line per pydantic error: ``where(loc)`` names the flag or file, then the problem."""
    lines = []
    for err in exc.errors():
        loc, what = tuple(err["loc"]), problem(err, known(tuple(err["loc"][:-1])), hints)
        place = where(loc)
        lines.append(f"{place}: {what}" if place else what)
    return lines


def settings_lines(
    exc,
    model: type,
    flags: Optional[dict[str, str]] = None,
    files: Sequence[tuple[Any, dict[tuple, int]]] = (),
    hints: Optional[dict[str, str]] = None,
) -> list[str]:
    """A settings model's ValidationError in the user's words. Each error names
    where its value came from: ``flags`` (setting path -> the flag the user
    gave), else the first of ``files`` ((path, lines), highest precedence
    first) that writes it, with its line."""
    flags = flags or {}

    def where(loc: tuple) -> str:
        dotted = ".".join(str(p) for p in loc)
        for end in range(len(loc), 0, -1):
            flag = flags.get(".".join(str(p) for p in loc[:end]))
            if flag:
                return flag
        for path, lines in files:
            line = line_of(lines, loc)
            if line is not None:
                return f"{path} line {line}: {dotted}"
        if files:
            return f"{files[0][0]}: {dotted}" if dotted else str(files[0][0])
        return dotted

    return validation_lines(exc, where, lambda prefix: known_fields(model, prefix), hints)


def known_fields(model: type, prefix: tuple) -> list[str]:
    """The setting names a pydantic ``model`` accepts under ``prefix`` (nested models followed)."""
    for part in prefix:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            return []
        inner = field.annotation
        inner = next((a for a in getattr(inner, "__args__", ()) if hasattr(a, "model_fields")), inner)
        if not hasattr(inner, "model_fields"):
            return []
        model = inner
    return list(getattr(model, "model_fields", {}))


# --------------------------------------------------------------------------- YAML with lines


def load_yaml_lines(path: str | Path, what: str = "a config file") -> tuple[dict[str, Any], dict[tuple, int]]:
    """A YAML mapping and the line of each key path (``("engine", "replicas") -> 7``).
    Raises UsageError naming the file (and line) when it cannot be read as one."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise UsageError(
            f"{path}: {what} is a mapping of settings (key: value lines), not {type(data).__name__}"
        )
    lines: dict[tuple, int] = {}

    def walk(n, at: tuple) -> None:
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                lines[at + (key.value,)] = key.start_mark.line + 1
                walk(value, at + (key.value,))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                lines[at + (i,)] = item.start_mark.line + 1
                walk(item, at + (i,))

    walk(node, ())
    return data, lines


def line_of(lines: dict[tuple, int], loc: tuple) -> Optional[int]:
    """The line of ``loc`` or of its nearest parent written in the file."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


# --------------------------------------------------------------------------- flags


class JobParser(argparse.ArgumentParser):
    """argparse with one-line errors: no usage dump, the nearest flag for a typo."""

    def parse_known_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)  # for error(): argparse does not pass them
        return super().parse_known_args(args, namespace)

    def unknown_flags(self, words: Sequence[str]) -> list[str]:
        """Each of ``words`` that looks like a flag this parser lacks, with the nearest one it has."""
        flags = [s for a in self._actions for s in a.option_strings]
        out = []
        for word in words:
            name = word.split("=")[0]
            if name.startswith("--") and name not in flags:
                hint = nearest(name, flags)
                out.append(f"{word} (did you mean {hint}?)" if hint else word)
        return out

    def error(self, message: str):  # noqa: D401 - argparse's hook
        unknown = re.match(r"unrecognized arguments: (.*)", message)
        if unknown:
            words = unknown.group(1).split()
            message = "unknown argument(s): " + ", ".join(self.unknown_flags(words) or words)
        elif "arguments are required" in message and self.unknown_flags(getattr(self, "_given", [])):
            # A required flag spelt wrong is missing only because of the typo: say the typo.
            message = "unknown argument(s): " + ", ".join(self.unknown_flags(self._given))
        print(f"error: {self.prog}: {message}\n  {self.prog} --help lists every flag", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """dest -> the flag as a user types it (the first long option)."""
    out = {}
    for action in parser._actions:  # argparse has no public list of its actions
        longs = [s for s in action.option_strings if s.startswith("--") and not s.startswith("--no-")]
        if longs:
            out[action.dest] = longs[0]
    return out


# --------------------------------------------------------------------------- the end of every job


def log_dir() -> Path:
    """Where jobs write their log files: ``COPY_FACTORY_LOG_DIR``, else the cache's ``logs/``."""
    from factory.model import cache_root

    return Path(os.environ.get("COPY_FACTORY_LOG_DIR") or cache_root() / "logs")


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "log_file_only", False)


class _Console(logging.StreamHandler):
    """stderr as it is at each line (a test runner swaps it), never a stale stream."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


class _JobLog(logging.FileHandler):
    """This invocation's log file."""


def setup_logging(job: str) -> Optional[Path]:
    """The job's INFO lines on the console (other libraries' only from warnings up,
    unless --verbose: factory/console.py) and every line in a log file of this invocation."""
    from factory.console import LIBRARY_LOGGERS, OWN_LOGGERS, OwnLinesOnly, set_verbose

    set_verbose(False)  # until the job's flags say otherwise
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for logger_ in (root, *map(logging.getLogger, LIBRARY_LOGGERS)):  # an earlier job in this process
        for old in [h for h in logger_.handlers if isinstance(h, _JobLog)]:
            logger_.removeHandler(old)
            old.close()
    if not any(isinstance(h, _Console) for h in root.handlers):
        console = _Console()
        console.setFormatter(fmt)
        root.addHandler(console)
    for handler in root.handlers:
        if isinstance(handler, _Console):
            handler.filters = [f for f in handler.filters if not isinstance(f, OwnLinesOnly)]
            handler.addFilter(OwnLinesOnly((*OWN_LOGGERS, job)))
    for handler in root.handlers:  # handlers other code set up (a test runner's) skip file-only records too
        if not isinstance(handler, logging.FileHandler) and not any(
            isinstance(f, _ConsoleFilter) for f in handler.filters
        ):
            handler.addFilter(_ConsoleFilter())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = log_dir() / f"{job}-{stamp}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _JobLog(path, encoding="utf-8")
    except OSError:
        return None  # a job that cannot keep a log still runs; its console has every line
    handler.setFormatter(fmt)
    handler.setLevel(logging.INFO)  # Ray Data's loggers pass DEBUG lines on as well
    root.addHandler(handler)
    return path


def report(exc: BaseException, log_file: Optional[Path] = None) -> int:
    """Tell ``exc`` on the console in the user's words and return its status;
    re-raise what no rule knows (a bug keeps its full traceback)."""
    code = exit_code(exc)
    if code is None:
        raise exc
    if code == EXIT_USAGE:
        lines = _usage_lines(exc)
    else:
        failed = storage_failure(exc) if code == EXIT_FAILED else None
        lines = (
            [f"storage failed on {failed.uri}: {failed.answer}"]
            if failed
            else str(exc).splitlines() or [type(exc).__name__]
        )
        logger.error("%s", lines[0], exc_info=exc, extra={"log_file_only": True})
        if log_file is not None:
            lines.append(f"full traceback in {log_file}")
    print("error: " + "\n  ".join(line.strip() for line in lines), file=sys.stderr)
    return code


def _usage_lines(exc: BaseException) -> list[str]:
    if isinstance(exc, UsageError):
        return exc.lines
    if isinstance(exc, _validation_error()):
        return validation_lines(exc, lambda loc: ".".join(str(p) for p in loc), lambda prefix: [])
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return [f"{exc.filename}: no such file or folder"]
    return str(exc).splitlines() or [type(exc).__name__]


def job_main(job: str, body: Callable[[Optional[Path]], int]) -> int:
    """Run a job's ``body(log_file)`` and turn what it raises into one status."""
    log_file = setup_logging(job)
    try:
        return body(log_file)
    except Exception as exc:  # noqa: BLE001 - reported by the table, or re-raised
        return report(exc, log_file)

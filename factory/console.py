"""What the console shows while a job runs.

By default the job's own lines (the plan, the progress line with its ETA, the
verdict mix, where the output is) and every library's errors. Ray's, Ray
Data's and vLLM's own lines (per-batch progress, operator plans, worker
output) go to the log files: Ray's session folder, and for the driver's
lines also the job's own log file. ``--verbose`` puts them back on the console.
"""

from __future__ import annotations

import logging

from factory import internals

# Loggers whose own console handlers we quieten (they do not pass records on to the root logger).
LIBRARY_LOGGERS = ("ray", "ray.data", "vllm")
# Loggers of the job itself: their INFO lines are what the console is for.
OWN_LOGGERS = ("factory", "jobs", "benchmarks")

_verbose = False


def set_verbose(verbose: bool) -> None:
    """The job's ``--verbose``: read when Ray starts (``ray_session.start_or_join``)."""
    global _verbose
    _verbose = bool(verbose)


def verbose() -> bool:
    return _verbose


class OwnLinesOnly(logging.Filter):
    """On the job's console handler: the job's own INFO lines, anybody's warnings and errors."""

    def __init__(self, own: tuple[str, ...] = OWN_LOGGERS):
        super().__init__()
        self.own = own

    def filter(self, record: logging.LogRecord) -> bool:
        if _verbose or record.levelno >= logging.WARNING:
            return True
        return any(record.name == name or record.name.startswith(name + ".") for name in self.own)


class ErrorsOnly(logging.Filter):
    """On a library's console handler: its errors only, unless --verbose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _verbose or record.levelno >= logging.ERROR


def quiet_libraries(job_log: logging.Handler | None) -> None:
    """Put the libraries' console handlers behind ErrorsOnly and let the job's log
    file (``job_log``) have their lines. Call once Ray and Ray Data are imported:
    Ray Data replaces its handlers when it is imported."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler) and not _has(handler, ErrorsOnly):
                handler.addFilter(ErrorsOnly())
        if job_log is not None and not logger.propagate and job_log not in logger.handlers:
            logger.addHandler(job_log)
    # With a handler on "ray.llm", Ray LLM's module loggers made from now on pass
    # their lines up to ray's (quieted) handlers instead of printing on their own.
    llm = logging.getLogger(internals.RAY_LLM_LOGGER)
    if not llm.handlers:
        llm.addHandler(logging.NullHandler())


def _has(handler: logging.Handler, kind: type) -> bool:
    return any(isinstance(f, kind) for f in handler.filters)

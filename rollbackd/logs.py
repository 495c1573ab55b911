"""Logging set-up: one renderer for rollbackd's structlog events and stdlib logs.

JSON lines when stderr is not a terminal (log collectors parse them), a
readable console rendering on a terminal. Context variables are merged into
every event, so ``structlog.contextvars.bind_contextvars(rollback_id=...)``
tags every line a rollback's task writes. Libraries that log through the
standard library (aiohttp, kubernetes_asyncio) go through the same renderer,
held at warning level so their chatter does not drown the rollback's story.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog
from structlog.typing import Processor

from rollbackd.redact import redact_event, redacted_exceptions

__all__ = ["LogFormat", "configure_logging"]

LogFormat = Literal["auto", "json", "console"]

# Loggers of libraries that are noisy at info level.
_QUIET_LIBRARIES = ("aiohttp", "kubernetes_asyncio", "urllib3", "asyncio")
_HANDLER_NAME = "rollbackd"


def _level_number(level: str) -> int:
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    return number


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", *, stream: TextIO | None = None
) -> None:
    """Configure structlog and stdlib logging; safe to call more than once."""
    out = stream if stream is not None else sys.stderr
    threshold = _level_number(level)
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(),
            exception_formatter=redacted_exceptions(structlog.dev.default_exception_formatter),
        )
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if as_json:
        # JSON carries the traceback as one string (no frame locals: they may
        # hold secrets); the console renderer formats exceptions itself.
        shared.append(structlog.processors.format_exc_info)

    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Last before rendering, for structlog and stdlib events alike.
            redact_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    # Replace only the handler this function installed earlier.
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING))

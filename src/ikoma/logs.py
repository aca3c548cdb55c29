"""structlog, JSON lines on stderr. Nothing secret is ever passed to a logger."""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.tracebacks import ExceptionDictTransformer

# A traceback is logged as data, frame by frame, but never with each frame's local variables: those hold
# opened credentials, tokens and order params (structlog's default shows them).
_TRACEBACKS = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


def configure(level: str = "info") -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    # alembic narrates every migration step at INFO; start-up prints its own one-line summary
    logging.getLogger("alembic").setLevel(max(numeric, logging.WARNING))
    # httpx logs every request at INFO: a runner would write a line per claim, heartbeat and log chunk
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _TRACEBACKS,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )

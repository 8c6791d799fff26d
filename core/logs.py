"""Logging with a request id on every record, as text for people or JSON lines for machines."""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
REDACTED = "[redacted]"
# Bearer tokens and JWTs (access, refresh, tracking links) never reach a log line, whoever logs them.
_TOKEN_PATTERNS = re.compile(r"(?i)(?<=bearer )[\w.~+/-]+=*|\beyJ[\w-]+\.[\w-]+\.[\w-]*")
# Secrets shorter than this are not matched by value: redacting "1234" everywhere would hide more
# than it protects, and no real key is that short.
_MIN_SECRET_LEN = 8
# Attributes every LogRecord has; anything else on a record came from `extra=` and is kept in JSON.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request (or socket event) being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class Redactor:
    """Replaces configured secret values, bearer tokens and JWTs in text with a marker."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        self._values = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(REDACTED, text)
        return _TOKEN_PATTERNS.sub(REDACTED, text)


class TextFormatter(logging.Formatter):
    """The readable line `make run` prints, redacted."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, request_id, `extra=` fields, exc."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
            "request_id": None if rid in (None, "-") else rid,
        }
        # Structured context a caller attached (route, status, latency_ms, user_id, ...).
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in out:
                out[key] = self._redact(value) if isinstance(value, str) else value
        if record.exc_info:
            out["exc"] = self._redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = self._redact(record.exc_text)
        if record.stack_info:
            out["stack"] = self._redact(self.formatStack(record.stack_info))
        return orjson.dumps(out, default=str).decode()


def make_handler(*, json_lines: bool = False, secrets: Iterable[str] = (),
                 stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) that stamps request ids and formats as asked."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    redact = Redactor(secrets)
    handler.setFormatter(JsonFormatter(redact) if json_lines else TextFormatter(redact))
    return handler


def configure_logging(level: str = "INFO", *, json_lines: bool = False, secrets: Iterable[str] = ()) -> None:
    """Install one stderr handler as the root's only one; `secrets` are values never to print."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(json_lines=json_lines, secrets=secrets)]
    root.setLevel(level.upper())
    # aiohttp's access log is noisy at INFO under load; warnings still show.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("engineio").setLevel(logging.WARNING)
    logging.getLogger("socketio").setLevel(logging.WARNING)

"""``serve``'s log: one handler on the root logger, text or JSON lines (``[log] format``), with every
record run through :class:`SecretFilter`, so no secret of the settings reaches a log line.

A decision's record (:mod:`callgate.ops.audit`) carries its fields as ``decision``; in JSON, those
fields are the line (``"event": "decision"``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from callgate.settings import HIDDEN, Settings
from callgate.settingtable import LogFormat

MIN_SCRUBBED = 4  # shorter secrets are not replaced in log lines: that would garble every line


class SecretFilter(logging.Filter):
    """Replaces each secret with ``***`` in a record's message, arguments and traceback, whoever
    logged it (a library's repr of a request, asyncio's "exception was never retrieved"). The last
    guard, behind messages that are written never to hold a secret."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        kept = {s for s in secrets if len(s) >= MIN_SCRUBBED}
        self.secrets = sorted(kept, key=len, reverse=True)  # a secret inside another goes last

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, HIDDEN)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it itself
            return True
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        decision = getattr(record, "decision", None)
        if isinstance(decision, dict):
            line = {"level": line["level"], "logger": record.name, "event": "decision", **decision}
        if record.exc_info:
            line["error"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line)


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretFilter(settings.secrets()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())

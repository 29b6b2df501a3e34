"""How every process logs: to stderr, as text for people or, with LOG_FORMAT=json,
one JSON object a line for a log collector.

A log call about a delivery or a webhook event passes its facts as `extra=` under
the names in FIELDS, so that both formats carry them: JSON as keys, text as
`key=value` after the message. Only those names are read from a record: whatever
else a library attaches to its records stays out of the log. What goes in never
names a patient: no name, contact, message text or token (see README.md, "Logs").
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# The facts a log line may carry, in the order the text format writes them.
FIELDS = ("clinic", "delivery_id", "reason", "channel", "state", "event_id", "outcome")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that say too much at INFO for a clinic's log.
CHATTY = ("alembic", "apscheduler")


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's facts among FIELDS; a fact given as None is left out."""
    values = ((name, getattr(record, name, None)) for name in FIELDS)
    return {name: _plain(value) for name, value in values if value is not None}


def _plain(value: Any) -> Any:
    # An enum (Reason, ChannelName, DeliveryState) is logged by its value.
    return getattr(value, "value", value)


class TextFormatter(logging.Formatter):
    """Today's text lines, with the record's facts after the message as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Here rather than in format(): the facts belong to the message's line, before
        # any traceback below it.
        facts = "".join(f" {k}={_text(v)}" for k, v in fields_of(record).items())
        return super().formatMessage(record) + facts


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if not text or " " in text else text


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO 8601, UTC), level, logger, message, the
    record's facts, and a traceback as `exception` (escaped, so still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Unescaped Japanese: the collector reads UTF-8, and people read the lines too.
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(level: str, log_format: str) -> None:
    """Log at `level` to stderr in `log_format` ("text" or "json"), unless logging
    was set up already (a test's capture)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level, handlers=[handler])
    for chatty in CHATTY:
        logging.getLogger(chatty).setLevel(logging.WARNING)

"""Structured logs: one JSON object per line, so a log shipper can index level, logger and message."""

from __future__ import annotations

import logging

import orjson


class JsonFormatter(logging.Formatter):
    """Formats a record as {"ts", "level", "logger", "msg", ["exc"]} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def logging_config(level: str, json: bool) -> dict:
    """A `logging.config.dictConfig` dict: JSON lines or plain text on stderr at `level`."""
    text_format = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    formatter = {"()": JsonFormatter} if json else {"format": text_format}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }

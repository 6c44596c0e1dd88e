"""Keeps bearer tokens out of server logs.

Browsers cannot set headers on a websocket handshake, so clients pass ``?token=`` (CONTRACT.md
§8) and uvicorn logs every websocket request line with its query string. This filter masks the
token before the record is formatted.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"(token=)[^&\s\"']+")


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install(logger_names: tuple[str, ...] = ("uvicorn.error", "uvicorn.access")) -> None:
    for name in logger_names:
        logging.getLogger(name).addFilter(RedactTokens())

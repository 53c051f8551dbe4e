"""Log lines about per-packet events, at most one per key per interval (never per packet)."""
from __future__ import annotations

import logging
import time


class RateLimitedLog:
    def __init__(self, log: logging.Logger, interval_s: float = 1.0):
        self.log = log
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def warning(self, key: str, fmt: str, *args, interval_s: float | None = None) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is None or now - last >= (self.interval_s if interval_s is None else interval_s):
            self._last[key] = now
            self.log.warning(fmt, *args)

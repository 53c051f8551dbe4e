"""State files in the run directory: JSON written atomically, read back with care.

Every file an actor keeps (docs/DESIGN.md, "Files a node keeps") is read through
StateFile.load: a file that is not JSON (invalid, truncated, not UTF-8) or not of its
shape (the `validate` callable given per file raises ValueError with the reason) is
moved aside (`NAME.bad`, the newest bad one), logged in one line and counted
(`state_file_bad` in the owner's counters, which `ilnp-status` shows), so the actor
starts empty instead of crash-looping on it, and a person can still look at it.
Temporary files a kill left mid-write (`.NAME.PID.tmp`) are removed when the owner
opens the file (counted `state_tmp_removed`).
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from bus.rundir import remove_stale_tmp, write_atomic

BAD_COUNTER = "state_file_bad"
TMP_COUNTER = "state_tmp_removed"
# what a shape check may raise on input it did not expect (all mean: not of the shape)
SHAPE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


class StateFile:
    def __init__(self, path: Path, log: logging.Logger, what: str,
                 validate: Callable[[Any], None] | None = None, counters: Counter | None = None):
        self.path = Path(path)
        self.log = log
        self.what = what  # names the log events: <what>_corrupt, <what>_unreadable
        self.validate = validate
        self.counters = counters if counters is not None else Counter()
        self.bad_reason: str | None = None  # why the last load set the file aside
        removed = remove_stale_tmp(self.path)
        if removed:
            self.counters[TMP_COUNTER] += len(removed)
            self.log.warning("event=%s_tmp_removed path=%s count=%d", self.what, self.path, len(removed))

    def load(self) -> Any | None:
        """The saved value, or None (no file, unreadable, or bad and moved aside)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.counters["state_file_unreadable"] += 1
            self.log.error("event=%s_unreadable path=%s error=%r", self.what, self.path, exc.strerror)
            return None
        try:
            value = json.loads(raw)  # bytes: not UTF-8 is a ValueError too
        except (ValueError, RecursionError) as exc:  # RecursionError: nested past any shape of ours
            return self._set_aside(f"not JSON ({'empty' if not raw.strip() else exc})")
        if self.validate is not None:
            try:
                self.validate(value)
            except SHAPE_ERRORS as exc:
                return self._set_aside(f"wrong shape ({_one_line(exc)})")
        return value

    def _set_aside(self, reason: str) -> None:
        aside = self.path.with_name(self.path.name + ".bad")
        try:
            os.replace(self.path, aside)
        except OSError:
            aside = "nowhere"
        self.bad_reason = reason
        self.counters[BAD_COUNTER] += 1
        self.log.error("event=%s_corrupt path=%s moved_to=%s reason=%s", self.what, self.path, aside, reason)
        return None

    def save(self, value: Any) -> None:
        """Write atomically (OSError if the disk refuses)."""
        write_atomic(self.path, json.dumps(value, indent=1).encode())


def _one_line(exc: BaseException) -> str:
    text = str(exc) if not isinstance(exc, KeyError) else f"missing key {exc}"
    return " ".join(text.split())[:200] or type(exc).__name__


# ---- shape checks the owners compose -------------------------------------------------

def need(condition: bool, reason: str) -> None:
    """A shape check: ValueError(reason) unless `condition`."""
    if not condition:
        raise ValueError(reason)


def is_int(value, low: int | None = None, high: int | None = None) -> bool:
    """An int (not a bool) within [low, high] where given."""
    return (isinstance(value, int) and not isinstance(value, bool)
            and (low is None or value >= low) and (high is None or value <= high))


def is_hex(value, lengths: tuple[int, ...] | None = None) -> bool:
    """A hex string (of one of `lengths` bytes, where given)."""
    if not isinstance(value, str):
        return False
    try:
        data = bytes.fromhex(value)
    except ValueError:
        return False
    return lengths is None or len(data) in lengths


def is_int_string(value, low: int | None = None, high: int | None = None) -> bool:
    """A decimal string of an int within [low, high] (JSON keys are strings)."""
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20 \
        and is_int(int(value), low, high)

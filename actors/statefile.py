"""State files in the run directory: JSON written atomically, read back with care.

A file that cannot be parsed is moved aside (`NAME.bad`) and logged, so an actor starts
empty instead of crash-looping on it, and a person can still look at it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from bus.rundir import write_atomic


class StateFile:
    def __init__(self, path: Path, log: logging.Logger, what: str):
        self.path = path
        self.log = log
        self.what = what  # names the log events: <what>_corrupt, <what>_unreadable

    def load(self) -> Any | None:
        """The saved value, or None (no file, unreadable, or corrupt and moved aside)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.log.error("event=%s_unreadable path=%s error=%r", self.what, self.path, exc.strerror)
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            aside = self.path.with_name(self.path.name + ".bad")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = "nowhere"
            self.log.error("event=%s_corrupt path=%s moved_to=%s error=%r", self.what, self.path, aside, str(exc))
            return None

    def save(self, value: Any) -> None:
        """Write atomically (OSError if the disk refuses)."""
        write_atomic(self.path, json.dumps(value, indent=1).encode())

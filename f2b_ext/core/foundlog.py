"""Core: how many of fail2ban's per-failure "Found" log lines a jail writes per second.

How it works: fail2ban writes one INFO line ("[jail] Found ADDR - TIME") for every failure
its filter counts. Under a flood of forged sources that is every flood line again, into
fail2ban's own log, and it costs more of fail2ban's CPU than matching the line does
(BENCHMARKS.md, "Where fail2ban-server's CPU goes"). A `FoundWindow` is a fixed window of
`per` seconds: the first `limit` lines of a window are written; the rest are only counted,
and the first line of a later window brings that count out once (the adapter writes it as
a summary line), so the log still says how many failures it did not list and since when.
Bans and unbans are other lines (NOTICE) and are never held back.

Plain data, no I/O: `admit()` mutates a small object because it runs for every failure.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from f2b_ext.core.escalation import ConfigError, parse_duration


@dataclass(frozen=True)
class FoundLimit:
    """At most `limit` Found lines per `per` seconds; limit 0 = no limit."""
    limit: int = 20
    per: int = 1

    @classmethod
    def parse(cls, text: str) -> "FoundLimit":
        """'20/1s', '100/10s', '20' (per second), '0' or 'none' (no limit)."""
        text = str(text).strip()
        if text.lower() in ("0", "none", "off"):
            return cls(0, 1)
        m = re.fullmatch(r"(\d+)\s*(?:/\s*(\S+))?", text)
        if not m:
            raise ConfigError(f"rate: {text!r} is not COUNT/DURATION like 20/1s (or none)")
        return cls(int(m.group(1)), parse_duration(m.group(2) or "1s", "rate"))


@dataclass
class FoundWindow:
    limit: FoundLimit
    start: float = float("-inf")     # this window's start
    written: int = 0                 # lines written in this window
    held: int = 0                    # lines held back since `held_since`, not yet reported
    held_since: Optional[float] = None

    def admit(self, now: float) -> tuple[bool, Optional[tuple[int, float]]]:
        """(write this line?, (lines held back, since when) to report now, or None)."""
        if not self.limit.limit:
            return True, None
        report = None
        if now - self.start >= self.limit.per or now < self.start:    # a new window (or the clock went back)
            self.start, self.written = now, 0
            if self.held:
                report = (self.held, self.held_since)
                self.held, self.held_since = 0, None
        if self.written < self.limit.limit:
            self.written += 1
            return True, report
        if not self.held:
            self.held_since = now
        self.held += 1
        return False, report

"""What every command shares: coloured output."""

from __future__ import annotations

import os


class Style:
    """ANSI colour only on a terminal (and never with NO_COLOR)."""

    def __init__(self, stream, mode: str = "auto"):
        self.on = mode == "always" or (mode == "auto" and stream.isatty() and "NO_COLOR" not in os.environ)

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text

    def red(self, t): return self._c("31;1", t)
    def green(self, t): return self._c("32", t)
    def dim(self, t): return self._c("2", t)
    def bold(self, t): return self._c("1", t)

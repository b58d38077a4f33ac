"""Adapter: the `found-limit` fail2ban action, which bounds a jail's "Found" log lines per
second (f2b_ext.core.foundlog decides which).

How it works: fail2ban's filter logs "[JAIL] Found ADDR - TIME" at INFO through its
`fail2ban.filter` logger for every failure. This action puts one logging filter on that
logger (once per process) and registers its jail there; the filter asks the jail's
`FoundWindow` whether a Found line of that jail is written, and when a window held lines
back it writes one summary line before the next Found line it lets through. Lines of
other jails, and every other message, pass untouched. The failure itself is counted by
fail2ban either way: only the log line is held back. ban() and unban() do nothing.
"""
from __future__ import annotations

import logging
import threading
import time

from fail2ban.server import filter as f2b_filter
from fail2ban.server.action import ActionBase

from f2b_ext.core.escalation import ConfigError
from f2b_ext.core.foundlog import FoundLimit, FoundWindow

FOUND = "[%s] Found %s - %s"            # fail2ban's message (filter.py, 1.0.2 and 1.1.0)
SUMMARY = ("[%s] %d Found lines not written since %s (found-limit: at most %d per %ds); "
           "fail2ban counted every failure")


class _FoundFilter(logging.Filter):
    """The one filter on fail2ban's filter logger: jail name -> (its FoundWindow, owner)."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger
        self.jails: dict[str, tuple[FoundWindow, object]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg is not FOUND and record.msg != FOUND:
            return True
        entry = self.jails.get(record.args[0]) if record.args else None
        if entry is None:
            return True
        window = entry[0]
        write, report = window.admit(time.time())
        if report:
            held, since = report
            self.logger.info(SUMMARY, record.args[0], held, time.strftime("%H:%M:%S", time.localtime(since)),
                             window.limit.limit, window.limit.per)
        return write


_lock = threading.Lock()
_filter: _FoundFilter | None = None


def installed_filter() -> _FoundFilter:
    """The process's filter on fail2ban's filter logger, added on first use."""
    global _filter
    with _lock:
        if _filter is None:
            _filter = _FoundFilter(f2b_filter.logSys)
            f2b_filter.logSys.addFilter(_filter)
        return _filter


class FoundLimitAction(ActionBase):
    """fail2ban action `found-limit.py[rate=20/1s]` (see the module docstring)."""

    def __init__(self, jail, name, rate: str = "20/1s"):
        super().__init__(jail, name)
        try:
            self.limit = FoundLimit.parse(rate)
        except ConfigError as exc:
            raise ValueError(f"{name}: {exc}") from None
        # from creation on: the jail's first lines (a restart into a flood) are bounded too
        installed_filter().jails[jail.name] = (FoundWindow(self.limit), self)

    def start(self):
        jails = installed_filter().jails
        if jails.get(self._jail.name, (None, None))[1] is not self:
            jails[self._jail.name] = (FoundWindow(self.limit), self)
        self._logSys.info("found-limit: at most %d Found lines per %ds%s", self.limit.limit, self.limit.per,
                          "" if self.limit.limit else " (no limit)")

    def stop(self):
        jails = installed_filter().jails
        if jails.get(self._jail.name, (None, None))[1] is self:    # a reload's new action may own it already
            del jails[self._jail.name]

    def reload(self, rate: str = "20/1s"):
        """fail2ban-client reload: the new rate, a fresh window."""
        try:
            self.limit = FoundLimit.parse(rate)
        except ConfigError as exc:
            raise ValueError(f"{self._name}: {exc}") from None
        installed_filter().jails[self._jail.name] = (FoundWindow(self.limit), self)

    def clearAllParams(self):
        """Called by reload before the new parameters arrive. fail2ban (1.0.2, 1.1.0:
        Actions.add) keeps an action across a reload only if it has both reload() and
        this; without it the reload dropped the action and the jail wrote every Found line."""

    def ban(self, aInfo):
        pass

    def unban(self, aInfo):
        pass

"""Where the files this suite ships are found: package data, read with importlib.resources.

How it works: the filters, actions, jails, the rsyslog rule and its logrotate file, the synwatch unit and the
sample logs that `f2b-ext test` runs live in the repository where an admin expects them
(filter.d/, action.d/, jail.d/, rsyslog.d/, logrotate/, systemd/, tests/samples/).
f2b_ext/data/<dir> are symlinks to those directories, and setup.cfg's package_data
(`data/*/*`) makes the build copy them into the package. So the one place to look is
`importlib.resources.files("f2b_ext") / "data" / <dir>`, whether f2b_ext runs from the
checkout, an editable install, a wheel in a venv (pip, pipx) or a Debian package. Nothing
here depends on the current directory or on a checkout being present.

The copy of f2b_ext that `f2b-ext install` puts into fail2ban's Python has no data (the
installer writes the files themselves under /etc); `data()` says so in one line.
"""
from __future__ import annotations

from importlib.resources import as_file, files
from importlib.resources.abc import Traversable

from .errors import F2bExtError

# The shipped directories, by what they hold (names as in the repository and under
# f2b_ext/data/).
FILTERS, ACTIONS, JAILS = "filter.d", "action.d", "jail.d"
RSYSLOG, SYSTEMD, SAMPLES = "rsyslog.d", "systemd", "samples"
FAIL2BAN_DIRS = (FILTERS, ACTIONS, JAILS)       # what a fail2ban config dir takes from us
RSYSLOG_RULE = (RSYSLOG, "f2b-ext-netfilter.conf")
LOGROTATE_FILE = ("logrotate", "f2b-ext-netfilter")
SYNWATCH_UNIT = (SYSTEMD, "f2b-ext-synwatch.service")


class DataMissing(F2bExtError, RuntimeError):
    """This copy of f2b_ext has no package data (the part `install` gives fail2ban)."""


def data(*parts: str) -> Traversable:
    """f2b_ext/data/<parts...>; DataMissing (one line) if it is not there."""
    item = files("f2b_ext") / "data"
    for part in parts:
        item = item / part
    if not (item.is_dir() or item.is_file()):
        raise DataMissing(f"{'/'.join(('f2b_ext', 'data') + parts)} is missing from {files('f2b_ext')}: "
                          "this copy of f2b_ext is the part `f2b-ext install` gave fail2ban; run the "
                          "f2b-ext command you installed (pip, pipx, a package or the checkout's .venv)")
    return item


def listing(directory: str, suffixes: tuple[str, ...] = ()) -> list[Traversable]:
    """The files of one shipped directory, sorted by name (only `suffixes`, if given)."""
    return sorted((f for f in data(directory).iterdir()
                   if f.is_file() and (not suffixes or f.name.endswith(suffixes))), key=lambda f: f.name)


__all__ = ["DataMissing", "as_file", "data", "listing", "FILTERS", "ACTIONS", "JAILS", "RSYSLOG",
           "SYSTEMD", "SAMPLES", "FAIL2BAN_DIRS", "RSYSLOG_RULE", "LOGROTATE_FILE", "SYNWATCH_UNIT"]

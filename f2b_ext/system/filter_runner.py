"""Adapter: run log lines through the real fail2ban filter machinery.

How it works: `FilterRunner` reads a filter with fail2ban's own `FilterReader` (so
`[Init]` parameters, mode tags and `common.conf` interpolation behave exactly as in a
jail), loads the result into a `fail2ban.server.filter.Filter` the way fail2ban's own
sample tests do, and hands each line to `Filter.processLine`. `config_dir()` lays out a
fail2ban configuration directory with the suite's files (package data, f2b_ext/shipped.py)
next to fail2ban's stock `common.conf`, so nothing under the real /etc/fail2ban is touched.

The only decision made here is none: the verdict is fail2ban's.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from f2b_ext import shipped
from f2b_ext.errors import F2bExtError
from f2b_ext.core.escalation import ConfigError

STOCK_CONFIG = Path("/etc/fail2ban")


class Fail2banMissing(F2bExtError, RuntimeError):
    pass


def _import_fail2ban():
    try:
        from fail2ban.client.filterreader import FilterReader
        from fail2ban.server.filter import Filter
    except ImportError as exc:
        raise Fail2banMissing(
            "fail2ban is not importable: install Debian's package (apt-get install fail2ban) "
            "and run with /usr/bin/python3 or a venv made with --system-site-packages") from exc
    return FilterReader, Filter


def stock_common_conf() -> Path:
    """fail2ban's own filter.d/common.conf (from the package's config or its sources)."""
    for candidate in (STOCK_CONFIG / "filter.d" / "common.conf",
                      Path("/usr/share/doc/fail2ban/examples/filter.d/common.conf")):
        if candidate.is_file():
            return candidate
    raise Fail2banMissing("fail2ban's filter.d/common.conf was not found")


def config_dir(target: Path) -> Path:
    """Lay out a fail2ban config dir at `target`: the suite's filter.d/action.d/jail.d plus
    the stock common.conf. Returns `target`."""
    target = Path(target)
    for sub in shipped.FAIL2BAN_DIRS:
        (target / sub).mkdir(parents=True, exist_ok=True)
        for item in shipped.listing(sub):
            (target / sub / item.name).write_bytes(item.read_bytes())
    common = target / "filter.d" / "common.conf"
    if not common.exists():
        shutil.copy2(stock_common_conf(), common)
    return target


def stock_init_options(name: str) -> dict:
    """{option: value} of the shipped filter `name`'s own [Init], as fail2ban's reader
    reads it with no jail and no .local: what a jail gets when it changes nothing."""
    import tempfile
    FilterReader, _ = _import_fail2ban()
    with tempfile.TemporaryDirectory(prefix="f2b-ext-stock-") as tmp:
        reader = FilterReader(name, "stock", {}, basedir=str(config_dir(Path(tmp))))
        if not reader.read():
            raise FileNotFoundError(f"filter {name!r} is not shipped")
        return {opt: reader.get("Init", opt) for opt in reader.options("Init")} if reader.has_section("Init") else {}


@dataclass
class Match:
    ip: str                 # the address fail2ban would ban, normalised
    groups: dict            # every capture (prefix, dir, proto, dpt, ...)
    time: float | None      # the line's timestamp as fail2ban read it
    regex_index: int


class FilterRunner:
    """One filter with one set of options, ready to judge lines."""

    def __init__(self, name: str, options: dict | None = None, basedir: Path | str = None):
        FilterReader, Filter = _import_fail2ban()
        reader = FilterReader(name, "f2b-ext", dict(options or {}), basedir=str(basedir))
        if not reader.read():
            raise FileNotFoundError(f"filter {name!r} not found under {basedir}/filter.d")
        reader.getOptions({})
        flt = Filter(None)
        flt.returnRawHost = True
        flt.checkFindTime = False
        flt.active = True
        for opt in reader.convert():
            values = opt[3] if opt[0] == "multi-set" else [opt[3]]
            for value in values:
                if opt[2] == "prefregex":
                    flt.prefRegex = value
                elif opt[2] == "addfailregex":
                    flt.addFailRegex(value)
                elif opt[2] == "addignoreregex":
                    flt.addIgnoreRegex(value)
                elif opt[2] == "datepattern":
                    flt.setDatePattern(value)
                elif opt[2] == "maxlines":
                    flt.setMaxLines(value)
        self.filter = flt

    @property
    def failregexes(self) -> list[str]:
        return self.filter.getFailRegex()

    def match(self, line: str, journal_time: float | None = None) -> list[Match]:
        """fail2ban's verdict on one line. With `journal_time`, the line is handed over
        as the systemd backend does (rendered entry, time known from the journal)."""
        line = line.rstrip("\r\n")
        if journal_time is not None:
            from fail2ban.server.mytime import MyTime
            processed = self.filter.processLine(("", MyTime.time2str(journal_time), line), journal_time)
        else:
            processed = self.filter.processLine(line)
        found = []
        for index, fid, when, fail in processed or ():
            if fid is None or fail.get("nofail"):
                continue
            groups = {k: v for k, v in fail.items()
                      if k not in ("matches", "ip4", "ip6", "dns") and v is not None}
            found.append(Match(ip=str(fid), groups=groups, time=when, regex_index=index))
        return found


def ensure_utc():
    """Sample times are written in UTC; read them so whatever the machine's zone."""
    import time
    os.environ["TZ"] = "UTC"
    time.tzset()


def parse_filter_spec(spec: str) -> tuple[str, dict]:
    """'netfilter[direction=out, logprefix=X]' -> ('netfilter', {...}), as jails write it."""
    from fail2ban.helpers import extractOptions
    try:
        name, options = extractOptions(spec)
    except ValueError:
        raise ConfigError(f"bad filter spec {spec!r}: expected NAME or NAME[key=value, ...]") from None
    return name, dict(options)

"""Adapter: the jails of a fail2ban configuration directory, as fail2ban itself reads them.

How it works: fail2ban's own JailsReader reads CONFDIR (jail.conf, jail.d/, the .local
files, paths-*.conf, and for each jail its filter's .conf and .local), so a jail here is
exactly what fail2ban-server would run, never a second reading of the files. While it
reads a jail's filter, fail2ban records the filter's options as that jail resolves them
(the jail's `filter = name[...]` over the filter's [Init] and its .local) as `known/<option>`
in the jail's section; `filter_options` returns those. Used by `f2b-ext check` (every
enabled jail) and `f2b-ext report --jail` (one jail, enabled or not).
"""
from __future__ import annotations

import logging
from pathlib import Path

from f2b_ext.system.fail2ban_client import Fail2banError
from f2b_ext.system.filter_runner import Fail2banMissing, parse_filter_spec


class Jails:
    """CONFDIR's jails: `jails` the enabled ones (JailReader each), or with `only` that
    jail alone, enabled or not. Errors are one line (Fail2banError)."""

    def __init__(self, conf: str, only: str | None = None):
        try:
            from fail2ban.client.jailsreader import JailsReader
        except ImportError:
            raise Fail2banMissing("fail2ban is not installed (apt-get install fail2ban)") from None
        if not Path(conf, "jail.conf").is_file():
            raise Fail2banError(f"{conf}/jail.conf not found: is fail2ban installed? (or give --conf)")
        self.conf = conf
        self.reader = JailsReader(basedir=conf, force_enable=only is not None)
        if only is None:
            if not self.reader.read() or not self.reader.getOptions():
                raise Fail2banError(f"fail2ban cannot read the jails in {conf}: see `fail2ban-client -c {conf} -t`")
            self.jails = self.reader.jails
            return
        quiet = logging.getLogger("fail2ban")           # its reasons come back as the jail's config-error
        level, quiet.level = quiet.level, logging.CRITICAL
        try:
            names = [s for s in self.reader.sections() if s != "INCLUDES"] if self.reader.read() else []
            if only not in names:
                raise Fail2banError(f"no jail {only!r} in {conf} (`fail2ban-client -c {conf} -d` lists its jails)")
            ok = self.reader.getOptions(section=only)
        finally:
            quiet.level = level
        self.jails = self.reader.jails
        if not ok or not self.jails:
            error = (self.jails[0].options or {}).get("config-error", "") if self.jails else ""
            raise Fail2banError(f"fail2ban cannot read jail {only!r} in {conf}" + (f": {error}" if error else ""))

    def filter_options(self, jail) -> tuple[str, dict]:
        """(filter name, {option: value}) of `jail`'s filter as fail2ban resolved it for
        this jail: every option fail2ban knows of it, [Init] ones included (the filter's
        defaults, its .local, the jail's own `filter = name[...]`), already substituted;
        ('', {}) without a filter."""
        spec = (jail.options or {}).get("filter") or ""
        if not spec:
            return "", {}
        name = parse_filter_spec(spec)[0]
        section = jail.getName()
        known = [o for o in self.reader.options(section) if o.startswith("known/")]
        return name, {o[len("known/"):]: self.reader.get(section, o, raw=True) for o in known}

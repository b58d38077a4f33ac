"""`f2b-ext schedule`: every ban of every jail, and when it ends, as a timeline.

How it works: the adapter (cli) asks the running fail2ban-server, over fail2ban's own
client protocol, for each jail's `banip --with-time` list and its actions. Those
strings come here: `parse_ban()` reads one ("203.0.113.0/24 \t2026-11-21 09:00:00 +
3600 = 2026-11-21 10:00:00", fail2ban's local time), `timeline()` orders every ban by its
end, and `render()` draws one row per ban: a bar from its start to its end on a common
time axis with "now" marked, and the time left. A subnet ban is an escalation when the
jail runs subnet-escalate. Remote host bans that the fleet agent holds in its own sets
(not in any jail) come from its ledger (`remote_bans()`, rows of
f2b_ext.system.fleet_ledger.LedgerStore.bans) as rows of the `fleet-agent` pseudo-jail, each
saying where it came from: origin servers, their jail and evidence kind. Nothing here
does I/O.
"""
from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import asdict, dataclass

from f2b_ext.core.escalation import ACTION_NAME as ESCALATING_ACTION
from f2b_ext.core.escalation import DAY, HOUR, MINUTE

_BAN = re.compile(r"^(?P<target>\S+)\s+(?P<start>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \+ (?P<length>-?\d+) = "
                  r"(?P<end>\S+ \S+)$")


@dataclass(frozen=True)
class Ban:
    jail: str
    target: str                 # an address or a prefix
    start: float
    length: int                 # seconds; -1: permanent
    end: float | None           # None: never
    subnet: bool
    escalated: bool             # a subnet the jail's subnet-escalate banned
    origin: str = ""            # a remote ban: "from a (sshd, forgeable); b (...)"


REMOTE_JAIL = "fleet-agent"     # the fleet agent's own sets (f2b_ext.system.fleet_sets.NAME)


def remote_bans(rows) -> list[Ban]:
    """Ban rows for the fleet agent's remote bans, from the ledger's
    [(target, until, [(origin, until, jail, evidence, at)])]; a host shown bare."""
    out = []
    for target, until, reports in rows:
        net = ipaddress.ip_network(target)
        start = min((at for *_, at in reports), default=until)
        shown = str(net.network_address) if net.num_addresses == 1 else str(net)
        origin = "from " + "; ".join(f"{o} ({jail}, {evidence})" for o, _, jail, evidence, _ in reports)
        out.append(Ban(REMOTE_JAIL, shown, start, int(until - start), until, net.num_addresses > 1, False,
                       origin if reports else ""))
    return out


def _local(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def parse_ban(jail: str, line: str, escalating: bool) -> Ban | None:
    """One line of `get JAIL banip --with-time`; None if it is not one."""
    m = _BAN.match(line.strip())
    if not m:
        return None
    try:
        net = ipaddress.ip_network(m["target"], strict=False)
        start = _local(m["start"])
    except ValueError:
        return None
    length = int(m["length"])
    subnet = "/" in m["target"] and net.num_addresses > 1
    end = None if length < 0 else start + length
    return Ban(jail, m["target"], start, length, end, subnet, subnet and escalating)


def timeline(bans: list[Ban]) -> list[Ban]:
    """Soonest end first, permanent bans last."""
    return sorted(bans, key=lambda b: (b.end is None, b.end or 0, b.jail, b.target))


def duration(seconds: float) -> str:
    """3725 -> '1h02m'; short and sortable by eye."""
    seconds = int(max(0, seconds))
    for unit, size, sub, subsize in (("d", DAY, "h", HOUR), ("h", HOUR, "m", MINUTE), ("m", MINUTE, "s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit}{(seconds % size) // subsize:02d}{sub}"
    return f"{seconds}s"


def as_json(bans: list[Ban], now: float) -> dict:
    rows = []
    for b in timeline(bans):
        row = asdict(b)
        row["remaining"] = None if b.end is None else max(0, int(b.end - now))
        rows.append(row)
    return {"now": now, "bans": rows}


def render(bans: list[Ban], now: float, jails: list[str], width: int = 100, style=None) -> list[str]:
    bold = style.bold if style else (lambda t: t)
    mark = (style.red if style else (lambda t: t))
    ordered = timeline(bans)
    lines = [bold(f"{len(bans)} bans in {len(jails)} jails at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}")]
    if not ordered:
        lines.append("  nothing banned" + (f" (jails: {', '.join(jails)})" if jails else ""))
        return lines
    first = min(b.start for b in ordered)
    last = max([b.end for b in ordered if b.end is not None] + [now + 60])
    name_w = min(40, max(len(b.target) for b in ordered))
    jail_w = min(24, max(len(b.jail) for b in ordered))
    bar_w = max(10, width - name_w - jail_w - 34)
    scale = bar_w / max(1.0, last - first)
    col = lambda t: min(bar_w - 1, int((t - first) * scale))
    start_label, end_label = (time.strftime("%m-%d %H:%M", time.localtime(t)) for t in (first, last))
    lines.append(f"  {'jail':<{jail_w}} {'banned':<{name_w}}  {start_label:<{bar_w - len(end_label)}}{end_label}")
    for b in ordered:
        cells = [" "] * bar_w
        stop = col(b.end) if b.end is not None else bar_w - 1
        for i in range(col(b.start), stop + 1):
            cells[i] = "=" if b.escalated else "-"
        if b.end is None:
            cells[-1] = ">"
        cells[col(now)] = "|"
        left = "permanent" if b.end is None else f"ends {time.strftime('%m-%d %H:%M', time.localtime(b.end))} " \
                                                  f"(in {duration(b.end - now)})"
        kind = (" escalated" if b.escalated else " subnet" if b.subnet else "") + (f" {b.origin}" if b.origin else "")
        target = (mark(b.target) if b.escalated else b.target)
        lines.append(f"  {b.jail:<{jail_w}} {target}{' ' * max(0, name_w - len(b.target))} "
                     f"[{''.join(cells)}] {left}{kind}")
    lines.append("  (| now; - a ban from its start to its end; = an escalated subnet; > permanent)")
    return lines

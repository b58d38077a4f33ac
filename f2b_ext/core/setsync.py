"""The set actions' invariant as a plain function: what to change so that a jail's kernel
sets hold exactly what fail2ban lists as banned, with the same expiry.

How it works: both sides are maps {network: seconds left, None = permanent}. `plan()`
compares them and returns three lists: bans fail2ban lists that the kernel lacks (add),
bans the kernel holds with an expiry that differs by more than `tolerance` seconds from
fail2ban's (retime: the kernel's element is replaced), and kernel elements fail2ban does
not list (remove) unless they are in `keep` (bans fail2ban's database still holds and is
about to restore after a restart: removing them would open a window). fail2ban's list is
always the truth; the kernel follows it. `listed()` turns fail2ban's ban tickets into
such a map, setting aside texts that are not addresses (`banip 999.0.2.7`) instead of
failing on them. No I/O here; the adapter is f2b_ext.plugins.set_action.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Optional

from f2b_ext.core.escalation import ban_left as remaining     # seconds a ban has left, None: permanent

Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class Plan:
    add: list[tuple[Net, Optional[float]]] = field(default_factory=list)
    retime: list[tuple[Net, Optional[float]]] = field(default_factory=list)
    remove: list[Net] = field(default_factory=list)

    def __bool__(self):
        return bool(self.add or self.retime or self.remove)

    def summary(self) -> str:
        """For the log: 'added 3 (203.0.113.7, ...), retimed 1 (...), removed 2 (...)'."""
        parts = []
        for verb, items in (("added", [n for n, _ in self.add]), ("retimed", [n for n, _ in self.retime]),
                            ("removed", self.remove)):
            if items:
                shown = ", ".join(str(n) for n in items[:5]) + (", ..." if len(items) > 5 else "")
                parts.append(f"{verb} {len(items)} ({shown})")
        return "; ".join(parts)


def _differs(want: Optional[float], have: Optional[float], tolerance: float) -> bool:
    if want is None or have is None:
        return (want is None) != (have is None)
    return abs(want - have) > tolerance


def plan(listed: dict, held: dict, keep: Iterable = (), tolerance: float = 2.0) -> Plan:
    """What makes `held` (the kernel) equal `listed` (fail2ban); see the module doc."""
    keep = set(keep)
    result = Plan()
    for net, left in listed.items():
        if net not in held:
            result.add.append((net, left))
        elif _differs(left, held[net], tolerance):
            result.retime.append((net, left))
    result.remove = [net for net in held if net not in listed and net not in keep]
    return result


def listed(tickets: Iterable[tuple[str, float, Optional[float]]], now: float) -> tuple[dict, list[str]]:
    """({network: seconds left}, [texts that are not addresses]) from fail2ban's tickets
    as (id, time of ban, ban time); expired tickets are left out."""
    out, bad = {}, []
    for text, start, bantime in tickets:
        try:
            net = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            bad.append(str(text))
            continue
        left = remaining(start, bantime, now)
        if left is None or left > 0:
            # one network listed twice (a host and its /32 spelled differently): the longer wins
            old = out.get(net, 0)
            out[net] = None if left is None or (net in out and old is None) else max(left, old)
    return out, bad

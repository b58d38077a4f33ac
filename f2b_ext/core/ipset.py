"""ipset `hash:net` sets and the iptables rules that match them, for iptables users:
the text and argument lists, nothing more.

How it works: per jail, one `hash:net` set per family (`f2bx-<jail>-4`, `f2bx-<jail>-6`;
ipset allows 31 characters, longer jail names are shortened with a hash) created with
`timeout 0`, so every element carries its own timeout (0 = permanent). A hash:net set
holds hosts (/32, /128) and prefixes side by side, overlapping ones too, and the
kernel matches the most specific: a /24 and its member hosts coexist, each with its
own timeout. One rule per chain (INPUT and FORWARD matching `src`; OUTPUT and FORWARD
matching `dst` for an outbound jail) goes first in the chain:
`-m set --match-set f2bx-<jail>-4 src -j DROP`. Functions return `ipset restore`
text and iptables arguments; the adapter (f2b_ext/plugins/ipset_net.py) runs them.
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Optional

from f2b_ext.core.nftset import as_network, kernel_seconds

SET_NAME_MAX = 31
MAX_TIMEOUT = 2147483            # ipset's largest element timeout (seconds)
MAXELEM = 1 << 20
FAMILIES = {4: "inet", 6: "inet6"}
TOOLS = {4: "iptables", 6: "ip6tables"}
CHAINS = {"in": (("INPUT", "src"), ("FORWARD", "src")),
          "out": (("OUTPUT", "dst"), ("FORWARD", "dst"))}
TARGETS = {"drop": ("-j", "DROP"), "reject": ("-j", "REJECT")}


def validate(direction: str, blocktype: str):
    if direction not in CHAINS:
        raise ValueError(f"direction: {direction!r} must be 'in' or 'out'")
    if blocktype not in TARGETS:
        raise ValueError(f"blocktype: {blocktype!r} must be 'drop' or 'reject'")


# ICMPv6 neighbour discovery (types 133-137, RFC 4861) is never dropped, even from or to
# a banned neighbour: the IPv6 rules match everything but ICMPv6, and ICMPv6 of every
# other type (one icmp6 match per type: iptables cannot negate a list).
ND_TYPES = (133, 134, 135, 136, 137)


def set_name(jail: str, family: int) -> str:
    """f2bx-<jail>-<family>; a name ipset cannot hold as it is (too long, other
    characters) is shortened and gets a hash of the exact name, so names never collide."""
    name = f"f2bx-{jail}-{family}"
    if len(name) <= SET_NAME_MAX and re.fullmatch(r"[A-Za-z0-9_.-]+", jail):
        return name
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", jail)
    digest = hashlib.sha1(jail.encode()).hexdigest()[:6]
    room = SET_NAME_MAX - len(f"f2bx--{family}") - len(digest) - 1
    return f"f2bx-{key[:room]}_{digest}-{family}"


def create_script(jail: str) -> str:
    """For `ipset -exist restore`: idempotent."""
    return "".join(f"create {set_name(jail, fam)} hash:net family {FAMILIES[fam]} timeout 0 maxelem {MAXELEM}\n"
                   for fam in (4, 6))


def element(net) -> str:
    net = as_network(net)
    host = net.prefixlen == net.max_prefixlen
    return str(net.network_address) if host else str(net)


def timeout(left: Optional[float]) -> int:
    """ipset's element timeout for a ban with `left` seconds (None: permanent -> 0)."""
    return 0 if left is None else min(MAX_TIMEOUT, kernel_seconds(left))


def add_script(jail: str, entries: Iterable[tuple]) -> str:
    """For `ipset -exist restore` (re-adding updates the timeout)."""
    lines = []
    for net, left in entries:
        net = as_network(net)
        lines.append(f"add {set_name(jail, net.version)} {element(net)} timeout {timeout(left)}\n")
    return "".join(lines)


def delete_args(jail: str, net) -> list[str]:
    net = as_network(net)
    return ["-exist", "del", set_name(jail, net.version), element(net)]


def rules(jail: str, direction: str, blocktype: str) -> list[tuple[str, list[str]]]:
    """(tool, [chain, match..., target...]) for every rule the jail needs; callers add
    -C/-I/-D."""
    validate(direction, blocktype)
    out = []
    not_nd = [arg for t in ND_TYPES for arg in ("-m", "icmp6", "!", "--icmpv6-type", str(t))]
    for fam in (4, 6):
        for chain, end in CHAINS[direction]:
            match = [chain, "-m", "set", "--match-set", set_name(jail, fam), end]
            if fam == 4:
                out.append((TOOLS[fam], [*match, *TARGETS[blocktype]]))
            else:
                out.append((TOOLS[fam], [*match, "!", "-p", "ipv6-icmp", *TARGETS[blocktype]]))
                out.append((TOOLS[fam], [*match, "-p", "ipv6-icmp", *not_nd, *TARGETS[blocktype]]))
    return out


def parse_save(text: str) -> dict:
    """{network: seconds left or None} from `ipset save SET` (timeout 0: permanent)."""
    held = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "add":
            left = None
            if "timeout" in parts:
                value = int(parts[parts.index("timeout") + 1])
                left = float(value) if value else None
            held[as_network(parts[2])] = left
    return held

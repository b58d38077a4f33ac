"""nftables sets that hold a jail's bans: the nft text for them, and reading the kernel's
answers about them (`nft -j`), nothing more.

How it works: one table of the suite's own (`inet f2b_ext`). Per jail, hosts go into
`<jail>_h4` / `<jail>_h6` (`flags timeout`), prefixes into one interval set per family and
prefix length (`<jail>_n4_24`, `<jail>_n4_16`, `<jail>_n6_64` ...), created when the
first prefix of that length is banned. Prefixes of one length never overlap, so member
hosts, their /24 and the /16 above it coexist without "interval overlaps" errors, and each
keeps its own timeout. Every element carries the ban's remaining time as its `timeout`,
so the kernel lifts a ban even if fail2ban dies. Per jail, one chain hooked on input and
one on forward drop (or reject) what the sets match by source; an outbound jail hooks
output (and forward) and matches by destination.

Functions return nft command text for libnftables; the adapter (f2b_ext/plugins/nftset.py)
runs it. No I/O here.
"""
from __future__ import annotations

import hashlib
import json
import ipaddress
import math
import re
from typing import Iterable, Optional

from f2b_ext.core.escalation import HOST_PREFIX

TABLE = "inet f2b_ext"
VERDICTS = {"drop": "drop", "reject": "reject"}
ADDR_TYPE = {4: "ipv4_addr", 6: "ipv6_addr"}
MATCH = {4: "ip", 6: "ip6"}
# hooks per direction, and which end of the packet is the remote
HOOKS = {"in": (("input", "saddr"), ("forward", "saddr")),
         "out": (("output", "daddr"), ("forward", "daddr"))}
PRIORITY = -5          # before the usual filter chains (priority 0)
# ICMPv6 neighbour discovery (RFC 4861 types 133-137: router solicitation and
# advertisement, neighbour solicitation and advertisement, redirect) is never dropped by
# a jail's chain, even from or to a banned neighbour: without it the link itself breaks
# (the server could not even answer its gateway). Accepting here only ends this chain;
# the admin's own chains still decide.
ND_TYPES = {133: "nd-router-solicit", 134: "nd-router-advert", 135: "nd-neighbor-solicit",
            136: "nd-neighbor-advert", 137: "nd-redirect"}
# Jail names kept as they are (hyphens become underscores): letters, digits, single
# hyphens between them. Such a key never holds "__", so every other name (one with "_",
# "--", a leading digit ...) gets "__" and a hash of the exact name: `a-b` and `a_b`
# never share sets.
PLAIN_JAIL = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*")


def jail_key(jail: str) -> str:
    """A jail name as an nft identifier, distinct for distinct names."""
    if PLAIN_JAIL.fullmatch(jail):
        return jail.replace("-", "_")
    digest = hashlib.sha1(jail.encode()).hexdigest()[:8]
    return "j" + re.sub(r"[^A-Za-z0-9]", "", jail)[:40] + "__" + digest


def as_network(net) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A network from text or a network (parsing costs microseconds; bans come in tens of
    thousands)."""
    if isinstance(net, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return net
    return ipaddress.ip_network(net, strict=False)


def set_name(jail: str, net) -> str:
    net = as_network(net)
    if not is_prefix(net):
        return f"{jail_key(jail)}_h{net.version}"
    return f"{jail_key(jail)}_n{net.version}_{net.prefixlen}"


def is_prefix(net) -> bool:
    net = as_network(net)
    return net.prefixlen < HOST_PREFIX[net.version]


def is_prefix_set_of(jail: str, name: str) -> bool:
    """Is `name` one of this jail's prefix sets (<key>_n4_24 ...)?"""
    return re.fullmatch(re.escape(jail_key(jail)) + r"_n[46]_\d{1,3}", name) is not None


def prefix_set_family(name: str) -> int:
    """4 or 6, from a prefix set's name ("<jail>_n4_24"); the jail key may hold "_n" too."""
    return int(name.rsplit("_n", 1)[1][0])


def validate(direction: str, verdict: str):
    if direction not in HOOKS:
        raise ValueError(f"direction: {direction!r} must be 'in' or 'out'")
    if verdict not in VERDICTS:
        raise ValueError(f"blocktype: {verdict!r} must be 'drop' or 'reject'")


def _set_decl(name: str, fam: int, interval: bool) -> str:
    flags = "interval, timeout" if interval else "timeout"
    return f"add set {TABLE} {name} {{ type {ADDR_TYPE[fam]}; flags {flags}; }}"


def _rules_for_set(jail: str, name: str, fam: int, direction: str, verdict: str) -> list[str]:
    return [f"add rule {TABLE} {jail_key(jail)}_{hook} {MATCH[fam]} {end} @{name} {VERDICTS[verdict]}"
            for hook, end in HOOKS[direction]]


def setup_script(jail: str, direction: str = "in", verdict: str = "drop",
                 prefix_sets: Iterable[str] = ()) -> str:
    """Idempotent: table, host sets, the jail's chains (flushed and refilled), rules for
    the host sets and for every prefix set named in `prefix_sets`."""
    validate(direction, verdict)
    key = jail_key(jail)
    lines = [f"add table {TABLE}"]
    hooks = [hook for hook, _ in HOOKS[direction]]
    # chains a previous run with the other direction left (kept across a restart)
    for other in sorted({hook for pairs in HOOKS.values() for hook, _ in pairs} - set(hooks)):
        lines += [f"add chain {TABLE} {key}_{other}", f"flush chain {TABLE} {key}_{other}",
                  f"delete chain {TABLE} {key}_{other}"]
    types = ", ".join(ND_TYPES.values())
    for hook in hooks:
        lines.append(f"add chain {TABLE} {key}_{hook} {{ type filter hook {hook} priority {PRIORITY}; policy accept; }}")
        lines.append(f"flush chain {TABLE} {key}_{hook}")
        lines.append(f"add rule {TABLE} {key}_{hook} icmpv6 type {{ {types} }} accept")
    for fam in (4, 6):
        name = f"{key}_h{fam}"
        lines.append(_set_decl(name, fam, interval=False))
        lines += _rules_for_set(jail, name, fam, direction, verdict)
    for name in sorted(set(prefix_sets)):
        fam = prefix_set_family(name)
        lines.append(_set_decl(name, fam, interval=True))
        lines += _rules_for_set(jail, name, fam, direction, verdict)
    return "\n".join(lines)


def new_prefix_set_script(jail: str, name: str, direction: str, verdict: str) -> str:
    fam = prefix_set_family(name)
    return "\n".join([_set_decl(name, fam, interval=True), *_rules_for_set(jail, name, fam, direction, verdict)])


def teardown_script(jail: str, direction: str, set_names: Iterable[str] = ()) -> str:
    """Remove exactly what setup created for this jail (the table stays for others);
    with no set names, only its chains."""
    key = jail_key(jail)
    lines = [f"delete chain {TABLE} {key}_{hook}" for hook, _ in HOOKS[direction]]
    lines += [f"delete set {TABLE} {name}" for name in sorted(set(set_names))]
    return "\n".join(lines)


def kernel_seconds(left: float) -> int:
    """A ban's `left` seconds as the whole seconds a kernel set's timeout takes, rounded
    up (at least 1): the kernel never drops a ban before fail2ban lifts it (rounded down,
    each natural expiry left a gap of up to a second and a needless repair)."""
    return max(1, math.ceil(left))


def element(net, timeout: Optional[float]) -> str:
    net = as_network(net)
    text = str(net.network_address) if net.prefixlen == HOST_PREFIX[net.version] else str(net)
    return text if timeout is None else f"{text} timeout {kernel_seconds(timeout)}s"


def add_elements_script(jail: str, entries: Iterable[tuple]) -> str:
    """`entries`: (network, remaining seconds or None for permanent); one command per set."""
    by_set: dict[str, list[str]] = {}
    for net, timeout in entries:
        by_set.setdefault(set_name(jail, net), []).append(element(net, timeout))
    return "\n".join(f"add element {TABLE} {name} {{ {', '.join(items)} }}" for name, items in by_set.items())


def delete_element_script(jail: str, net) -> str:
    return f"delete element {TABLE} {set_name(jail, net)} {{ {element(net, None)} }}"


# --- reading the kernel's answers (nft -j) ---------------------------------------------

def elements(listing: dict) -> dict:
    """{network: seconds left or None} from `nft -j list set`'s answer (pure)."""
    held = {}
    for item in listing.get("nftables", ()):
        for elem in item.get("set", {}).get("elem", ()):
            left = None
            if isinstance(elem, dict) and "elem" in elem:
                left = elem["elem"].get("expires", elem["elem"].get("timeout"))
                elem = elem["elem"]["val"]
            if isinstance(elem, dict) and "prefix" in elem:
                net = ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}", strict=False)
            elif isinstance(elem, str):
                net = ipaddress.ip_network(elem, strict=False)
            else:                       # a range: never written by this action
                continue
            held[net] = None if left is None else float(left)
    return held


def jail_elements(jail: str, run) -> dict:
    """{network: seconds left} the jail's nft sets hold, read with `run(*nft_args) ->
    stdout` (the nft command line: `f2b-ext check`, the live lab's judge)."""
    text = run("-j", "list", "sets", "table", "inet", "f2b_ext")
    held = {}
    for item in (json.loads(text).get("nftables", ()) if text.strip() else ()):
        name = item.get("set", {}).get("name", "")
        if name in {f"{jail_key(jail)}_h{f}" for f in (4, 6)} or is_prefix_set_of(jail, name):
            held.update(elements({"nftables": [item]}))
    return held


def retime_elements_script(jail: str, entries: Iterable[tuple]) -> str:
    """New timeouts for elements that may or may not be in the set, in one transaction
    that never fails on a missing one: add (a no-op if present), delete, add again with
    the new timeout. No moment without the ban: the transaction is atomic."""
    entries = list(entries)
    nets = [net for net, _ in entries]
    return "\n".join(filter(None, (add_elements_script(jail, [(n, 60) for n in nets]),
                                   _delete_elements_script(jail, nets),
                                   add_elements_script(jail, entries))))


def remove_elements_script(jail: str, nets: Iterable) -> str:
    """Delete elements whether or not they are still in the set (one expired meanwhile
    would fail a plain delete, and with it the whole transaction)."""
    nets = list(nets)
    return "\n".join(filter(None, (add_elements_script(jail, [(n, 1) for n in nets]),
                                   _delete_elements_script(jail, nets))))


def _delete_elements_script(jail: str, nets: Iterable) -> str:
    by_set: dict[str, list[str]] = {}
    for net in nets:
        by_set.setdefault(set_name(jail, net), []).append(element(net, None))
    return "\n".join(f"delete element {TABLE} {name} {{ {', '.join(items)} }}" for name, items in by_set.items())

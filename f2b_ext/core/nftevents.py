"""nf_tables change notifications: which ones may have removed a jail's enforcement, and
when to compare the kernel with fail2ban's list after them. Plain functions on bytes;
the socket that receives them is f2b_ext.system.nftevents.

How it works: the kernel multicasts every committed nf_tables change to the netlink
group NFNLGRP_NFTABLES of NETLINK_NETFILTER, in the network namespace it happened in
(net/netfilter/nf_tables_api.c: nf_tables_*_notify, the messages `nft monitor` prints).
Each message is an nlmsghdr, whose type is (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_*,
then a struct nfgenmsg (the table's family) and netlink attributes naming the table and
the object. One transaction's messages end with NFT_MSG_NEWGEN, which names the process
(thread id and command) that committed it.

Seen on Linux 6.18 in a namespace: `nft flush set` sends one DELSETELEM per element
(an interval set's /24 as its start, its end and the 0.0.0.0 end element); `nft delete
rule` one DELRULE; `nft flush ruleset` DELRULE, DELSET (no per-element message), DELCHAIN
and DELTABLE per table. An element that times out sends nothing, so expiries cost
nothing here. `ipset flush` sends nothing on this group (ipset is not nf_tables).

`REMOVES` is the table of message types that can take enforcement away. `parse()` reads
a datagram into `Event`s; `removes_enforcement()` keeps those of a removing type in the
jail's own tables and objects (`Scope`); `Transactions` collects them until the
transaction's NEWGEN and drops a transaction that this action itself committed (its own
unbans and repairs). `due()` says when to compare: 0.2 s after the last such transaction
(DEBOUNCE), at most 1 s after the first (MAX_DELAY, so a storm cannot postpone it), and
never more than MAX_PER_SECOND times a second nor more than MAX_SHARE of the time.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, Optional

# include/uapi/linux/netlink.h, include/uapi/linux/netfilter/nfnetlink.h
NETLINK_NETFILTER = 12
NFNLGRP_NFTABLES = 7
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NFNL_SUBSYS_NFTABLES = 10
NLMSG_HEADER = struct.Struct("=IHHII")      # nlmsg_len, nlmsg_type, nlmsg_flags, nlmsg_seq, nlmsg_pid
NFGENMSG = struct.Struct("=BBH")            # nfgen_family, version, res_id (big endian)
NLATTR = struct.Struct("=HH")               # nla_len, nla_type
NLA_TYPE_MASK = 0x3FFF                      # without NLA_F_NESTED, NLA_F_NET_BYTEORDER

# include/uapi/linux/netfilter.h: nfgen_family values
NFPROTO = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}

# include/uapi/linux/netfilter/nf_tables.h: enum nf_tables_msg_types
NFT_MSG = dict(NEWTABLE=0, GETTABLE=1, DELTABLE=2, NEWCHAIN=3, GETCHAIN=4, DELCHAIN=5, NEWRULE=6, GETRULE=7,
               DELRULE=8, NEWSET=9, GETSET=10, DELSET=11, NEWSETELEM=12, GETSETELEM=13, DELSETELEM=14,
               NEWGEN=15, GETGEN=16, TRACE=17, NEWOBJ=18, GETOBJ=19, DELOBJ=20, GETOBJ_RESET=21,
               NEWFLOWTABLE=22, GETFLOWTABLE=23, DELFLOWTABLE=24, GETRULE_RESET=25, DESTROYTABLE=26,
               DESTROYCHAIN=27, DESTROYRULE=28, DESTROYSET=29, DESTROYSETELEM=30, DESTROYOBJ=31,
               DESTROYFLOWTABLE=32, GETSETELEM_RESET=33)
NFT_MSG_NAMES = {number: name for name, number in NFT_MSG.items()}
NEWGEN = NFT_MSG["NEWGEN"]
NFTA_GEN_PROC_PID, NFTA_GEN_PROC_NAME = 2, 3    # enum nft_gen_attributes

# The message types that may take a ban's enforcement away: what they remove, and the
# attribute numbers of the table's name and of the object's name in their message
# (enum nft_table/chain/rule/set/set_elem_list_attributes). A deleted rule and a flushed
# chain are DELRULE; `flush ruleset` is DEL* of every object, then DELTABLE per table.
# The kernel notifies a DESTROY* command (Linux 6.3+) as its DEL*; both are here.
# Everything else (NEW*, GET*, TRACE, objects, flowtables) adds or reads, never removes
# a set, its elements or the rules that match them.
REMOVES = {
    NFT_MSG["DELTABLE"]: ("table", 1, None),        # NFTA_TABLE_NAME
    NFT_MSG["DELCHAIN"]: ("chain", 1, 3),           # NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME
    NFT_MSG["DELRULE"]: ("rule", 1, 2),             # NFTA_RULE_TABLE, NFTA_RULE_CHAIN
    NFT_MSG["DELSET"]: ("set", 1, 2),               # NFTA_SET_TABLE, NFTA_SET_NAME
    NFT_MSG["DELSETELEM"]: ("element", 1, 2),       # NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET
    NFT_MSG["DESTROYTABLE"]: ("table", 1, None),
    NFT_MSG["DESTROYCHAIN"]: ("chain", 1, 3),
    NFT_MSG["DESTROYRULE"]: ("rule", 1, 2),
    NFT_MSG["DESTROYSET"]: ("set", 1, 2),
    NFT_MSG["DESTROYSETELEM"]: ("element", 1, 2),
}

# When to compare (seconds). A compare lists the jail's sets and chains and compares them
# with fail2ban's list: 17 ms for 1,000 elements, 0.5 s for 20,000 (0.9 s with
# rewriting them all after a flush; BENCHMARKS.md). At most MAX_PER_SECOND (2) compares
# a second, and never more than MAX_SHARE of the time: after a compare that took c
# seconds the next waits at least c / MAX_SHARE. So a storm of deletions in the jail's
# sets or chains by someone else (a firewall script deleting rule after rule) costs at
# most a quarter of one core; other jails' changes and this action's own are not heard
# at all; a single flush is repaired DEBOUNCE plus one compare later.
DEBOUNCE = 0.2
MAX_DELAY = 1.0
MAX_PER_SECOND = 2
MAX_SHARE = 0.25


@dataclass(frozen=True)
class Event:
    """One message: its NFT_MSG_* type (None: not nf_tables or unreadable), the table's
    family and name, the object's name (chain, set; a rule's chain; an element's set),
    and for NEWGEN the committing thread's id and command."""
    type: Optional[int]
    family: int = 0
    table: Optional[str] = None
    name: Optional[str] = None
    pid: Optional[int] = None
    command: Optional[str] = None
    unreadable: bool = False

    def describe(self) -> str:
        """'element deleted: inet f2b_ext inv_h4', 'table deleted: inet f2b_ext'."""
        if self.type not in REMOVES:
            return NFT_MSG_NAMES.get(self.type, "unreadable message")
        where = " ".join(x for x in (_family_name(self.family), self.table, self.name) if x is not None)
        return f"{REMOVES[self.type][0]} deleted: {where}"


def _family_name(family: int) -> str:
    return next((name for name, number in NFPROTO.items() if number == family), str(family))


def _attributes(data: bytes, start: int, end: int) -> Optional[dict]:
    """{attribute type: payload} of the attributes in data[start:end]; None if malformed."""
    out = {}
    while start + NLATTR.size <= end:
        length, kind = NLATTR.unpack_from(data, start)
        if length < NLATTR.size or start + length > end:
            return None
        out.setdefault(kind & NLA_TYPE_MASK, data[start + NLATTR.size:start + length])
        start += (length + 3) & ~3
    return out


def _text(payload: Optional[bytes]) -> Optional[str]:
    if payload is None:
        return None
    return payload.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse(data: bytes) -> list[Event]:
    """The messages of one datagram. Other netfilter subsystems' messages are left out;
    a message that cannot be read ends the datagram as one Event(unreadable=True)."""
    events, offset = [], 0
    while offset < len(data):
        if offset + NLMSG_HEADER.size > len(data):
            events.append(Event(None, unreadable=True))
            break
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        end = offset + length
        if length < NLMSG_HEADER.size or end > len(data):
            events.append(Event(None, unreadable=True))
            break
        if kind >> 8 == NFNL_SUBSYS_NFTABLES:
            events.append(_event(kind & 0xFF, data, offset + NLMSG_HEADER.size, end))
        offset += (length + 3) & ~3
    return events


def _event(kind: int, data: bytes, start: int, end: int) -> Event:
    if start + NFGENMSG.size > end:
        return Event(kind, unreadable=True)
    family = NFGENMSG.unpack_from(data, start)[0]
    attrs = _attributes(data, start + NFGENMSG.size, end)
    if attrs is None:
        return Event(kind, family, unreadable=True)
    if kind == NEWGEN:
        pid = attrs.get(NFTA_GEN_PROC_PID)
        return Event(kind, family, pid=struct.unpack(">I", pid)[0] if pid is not None and len(pid) == 4 else None,
                     command=_text(attrs.get(NFTA_GEN_PROC_NAME)))
    if kind not in REMOVES:
        return Event(kind, family)
    _, table_attr, name_attr = REMOVES[kind]
    return Event(kind, family, _text(attrs.get(table_attr)),
                 _text(attrs.get(name_attr)) if name_attr is not None else None)


@dataclass(frozen=True)
class Scope:
    """What a jail's enforcement lives in: tables as (family, name), and which objects
    in them are its own (a rule's chain, an element's set, a chain or set by name);
    `names` None: every object in those tables."""
    tables: frozenset
    names: Optional[Callable[[str], bool]] = None


def removes_enforcement(event: Event, scope: Scope) -> bool:
    """May this message have taken away some of the jail's enforcement? When the message
    does not say where (unreadable, no table, no name), yes: a compare costs little."""
    if event.unreadable:
        return True
    if event.type not in REMOVES:
        return False
    if event.table is None:
        return True
    if (event.family, event.table) not in scope.tables:
        return False
    if REMOVES[event.type][0] == "table" or event.name is None or scope.names is None:
        return True
    return scope.names(event.name)


@dataclass
class Transactions:
    """Collects, message by message, what may have removed enforcement until the
    transaction's NEWGEN; `feed` returns why to compare (text for the log) when a
    transaction that some other thread committed removed something, else None. `ours`
    tells whether a thread id (NEWGEN's) is one of this action's own writers. Holds at
    most three distinct descriptions and a count, whatever the size of the transaction."""
    scope: Scope
    ours: Callable[[int], bool] = lambda pid: False
    shown: dict = field(default_factory=dict)       # description -> messages
    count: int = 0

    def feed(self, event: Event) -> Optional[str]:
        if event.type == NEWGEN:
            shown, count = self.shown, self.count
            self.shown, self.count = {}, 0
            if not count or (event.pid is not None and self.ours(event.pid)):
                return None
            parts = [text if times == 1 else f"{text} (x{times})" for text, times in shown.items()]
            if count > sum(shown.values()):
                parts.append(f"{count - sum(shown.values())} more")
            pid = event.pid if event.pid is not None else "?"
            return f"{', '.join(parts)} by {event.command or '?'} (pid {pid})"
        if event.unreadable:
            self.shown, self.count = {}, 0
            return "an unreadable nftables message"
        if removes_enforcement(event, self.scope):
            self.count += 1
            text = event.describe()
            if text in self.shown or len(self.shown) < 3:
                self.shown[text] = self.shown.get(text, 0) + 1
        return None


def due(first: float, last: float, last_check: float, last_cost: float = 0.0) -> float:
    """When to compare, given the first and the last pending removal (monotonic
    seconds), when the last event-driven compare began (-inf: never) and how long it
    took."""
    return max(min(last + DEBOUNCE, first + MAX_DELAY), last_check + max(1 / MAX_PER_SECOND, last_cost / MAX_SHARE))

"""Kernel netfilter LOG lines: what they say, and whether one is an attempt by the remote.

How it works
------------
`parse_message()` reads the kernel's record out of one log message. The record has the
fixed grammar of the kernel's `net/netfilter/nf_log_syslog.c` (iptables/ip6tables `-j LOG`,
nftables `log`): `<prefix>IN= OUT= [PHYSIN= PHYSOUT=] [MAC...] SRC= DST= <ip fields>
PROTO=...` (older kernels: `IN= [PHYSIN=] OUT= [PHYSOUT=]`). Numbers are ASCII digits
(at most 10: 32 bits) and addresses are read in the kernel's own notation only. The
parser walks that grammar token by token and never looks inside the bracketed packet
that ICMP errors embed, so a `SRC=` there can never be mistaken for the sender. It
returns a `Record` (plain data) or None.

Three runs of fields that no verdict depends on are skipped, not read, exactly as the
filter skips them (SKIPPED below): the link layer after `MAC=`/`MACDST=` (only its
broadcast destination matters), the IPv4 header fields from `LEN=` to `PROTO=`, and the
TCP fields between `DPT=` and `RES=`. The kernel prints only numbers and hex there, which no
sender of a packet chooses; a local user who can forge a kernel line can forge a
well-formed one as easily.

`classify()` applies the rule tables below to a `Record` and a `Policy` (the filter's
parameters) and returns a `Verdict`: is it an attempt, who is the remote, and why.
`filter.d/netfilter.conf` encodes the same tables as fail2ban regexes; the test suite
checks, exhaustively and with generated lines, that the two always agree.

Nothing here does I/O.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# --- Rule tables -------------------------------------------------------------------

# TCP flag words in the order the kernel prints them (nf_log_dump_tcp_header).
TCP_FLAG_ORDER = ("AE", "CWR", "ECE", "URG", "ACK", "PSH", "RST", "SYN", "FIN")
# A segment carrying ACK or RST answers something (RFC 9293 3.10.7): backscatter of a flood
# that forged our address, or a stale packet. Never an attempt by its sender.
TCP_ANSWER_FLAGS = frozenset({"ACK", "RST"})
# Outbound, only a new connection (SYN without ACK/RST) is the server calling the remote.
TCP_OPEN_FLAG = "SYN"

# ICMP (RFC 792, RFC 950): requests are the sender's own doing; replies and errors
# answer a packet somebody else sent, often with our address forged.
ICMP_REQUESTS = {8: "echo request", 13: "timestamp request",
                 15: "information request", 17: "address mask request"}
ICMP_NAMES = {0: "echo reply", 3: "destination unreachable", 4: "source quench",
              5: "redirect", 11: "time exceeded", 12: "parameter problem",
              14: "timestamp reply", 16: "information reply", 18: "address mask reply",
              **ICMP_REQUESTS}
# ICMPv6 (RFC 4443, 4861, 2710/3810): only an echo request is an attempt; errors,
# echo reply, neighbour discovery and MLD never.
ICMPV6_REQUESTS = {128: "echo request"}
ICMPV6_NAMES = {1: "destination unreachable", 2: "packet too big", 3: "time exceeded",
                4: "parameter problem", 129: "echo reply", 130: "MLD query",
                131: "MLD report", 132: "MLD done", 133: "router solicitation",
                134: "router advertisement", 135: "neighbour solicitation",
                136: "neighbour advertisement", 137: "redirect", 143: "MLDv2 report",
                **ICMPV6_REQUESTS}
# Neighbour discovery and multicast listener messages: the LAN talking to itself.
ICMPV6_HOUSEKEEPING = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})

# UDP from these source ports is a late reply or a reflection, not a probe.
DEFAULT_REPLY_PORTS = {53: "DNS", 67: "DHCP server", 68: "DHCP client", 123: "NTP",
                       137: "NetBIOS name", 138: "NetBIOS datagram", 1900: "SSDP",
                       5353: "mDNS"}

# Protocols named by number that are LAN housekeeping, never an attempt.
NEVER_ATTEMPT_PROTOCOLS = {"2": "IGMP"}
# Names for the protocol numbers the kernel prints bare (IANA protocol numbers).
PROTOCOL_NAMES = {"2": "IGMP", "4": "IPIP", "41": "IPv6-in-IPv4", "47": "GRE",
                  "103": "PIM", "112": "VRRP", "115": "L2TP", "132": "SCTP"}

# Destinations that are not this host alone: multicast and broadcast.
MULTICAST_NETS = (ipaddress.ip_network("224.0.0.0/4"), ipaddress.ip_network("ff00::/8"))
BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
# Remotes that never count, most specific first (the first that holds an address names
# the reason). The filter's __never_remote is the same table as a regex.
NEVER_REMOTE = tuple((ipaddress.ip_network(net), why) for net, why in (
    ("0.0.0.0/8", "unspecified ('this network', 0.0.0.0/8): nobody to ban"),
    ("::/128", "unspecified address (::): nobody to ban"),
    ("127.0.0.0/8", "loopback address: on a real interface a forged martian"),
    ("::1/128", "loopback address: on a real interface a forged martian"),
    ("169.254.0.0/16", "link-local address (169.254/16): a LAN neighbour"),
    ("fe80::/10", "link-local address (fe80::/10): a LAN neighbour, perhaps the router"),
    ("::ffff:0:0/96", "IPv4-mapped IPv6 address: never an IPv4 host's ban"),
    ("::ffff:0:0:0/96", "IPv4-translated IPv6 address: never an IPv4 host's ban"),
    ("::/96", "IPv4-compatible IPv6 address: never an IPv4 host's ban"),
    ("64:ff9b::/96", "NAT64 address (embeds an IPv4 host): never an IPv4 host's ban"),
    ("64:ff9b:1::/48", "NAT64 address (embeds an IPv4 host): never an IPv4 host's ban"),
))
LOOPBACK_IFACE = "lo"
# Default inside interfaces (filter's insideifaces): bridges and links of containers and VMs.
DEFAULT_INSIDE_IFACES = (r"(?=[bcdfiklpvw])(?:docker[0-9]+|br-[0-9a-f]{12}|podman[0-9]+|cni-podman[0-9]+|virbr[0-9]+|"
                         r"vnet[0-9]+|lxcbr[0-9]+|lxdbr[0-9]+|incusbr[0-9]+|cni[0-9]+|flannel\.[0-9]+|"
                         r"cali[0-9a-f]+|cilium_\w+|lxc[0-9a-f]+|weave|kube-bridge|veth\w+)")
NO_ADDRESSES = "(?!)"

# The filter's [Init] parameters, which Policy reads (from_filter_options): all of
# filter.d/netfilter.conf's [Init] (tests/test_report.py checks they are the same).
POLICY_OPTIONS = ("direction", "mode", "logprefix", "replyports", "protocols",
                  "insideifaces", "insideaddrs", "icmptypes", "icmp6types", "neverprotos")
DIRECTIONS = ("in", "out", "any")
MODES = ("normal", "aggressive")
# Default logprefix: any text without "=" before IN=, at most the kernel's 127 characters
# (its prefix holds its own delimiter, ": " or " "); the filter's default, character for
# character. Any logprefix is followed by a delimiter of up to two ":" or white-space
# characters (PREFIX_DELIMITER), then IN=.
ANY_PREFIX = r"[^=]{0,127}(?=IN=)"
# Default `protocols`: every PROTO= word. A jail narrows it to words such as "47" (GRE).
ANY_PROTOCOL = r"\w++"
PREFIX_DELIMITER = r"[:\s]{0,2}+"


# --- Data --------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One netfilter LOG record, as the kernel printed it."""
    prefix: str
    in_iface: str
    out_iface: str
    mac_dst: Optional[str]          # destination MAC (first octets of MAC=, or MACDST=)
    src: Address
    dst: Address
    proto: str                      # TCP, UDP, UDPLITE, ICMP, ICMPv6, ESP, AH or a number
    spt: Optional[int] = None
    dpt: Optional[int] = None
    flags: Optional[frozenset] = None   # TCP flag words; None when the header was not logged
    icmp_type: Optional[int] = None
    physin: tuple = ()              # bridge ports the packet came in on (PHYSIN=)
    physout: Optional[str] = None   # bridge port it leaves by (PHYSOUT=)
    truncated: bool = False         # "PROTO=X INCOMPLETE [n bytes]": header cut short

    @property
    def forwarded(self) -> bool:
        return bool(self.in_iface and self.out_iface)

    @property
    def direction(self) -> str:
        """'in' (arrived, also forwarded), 'out' (sent by this host)."""
        return "in" if self.in_iface else "out"

    @property
    def remote(self) -> Address:
        return self.src if self.direction == "in" else self.dst


def _numbers(key: str, value: str, limit: int, what: str) -> list[int]:
    """A filter parameter that is numbers joined by '|' (as its regex alternation)."""
    items = value.split("|")
    if not all(n.isdigit() and int(n) < limit for n in items):
        raise ValueError(f"{key} must be {what} joined by '|': {value!r}")
    return [int(n) for n in items]


@dataclass(frozen=True)
class Policy:
    """The filter's parameters (see filter.d/netfilter.conf [Init])."""
    direction: str = "in"
    mode: str = "normal"
    logprefix: str = ANY_PREFIX
    reply_ports: frozenset = field(default_factory=lambda: frozenset(DEFAULT_REPLY_PORTS))
    protocols: Optional[frozenset] = None       # PROTO= words that may count; None: all
    inside_ifaces: str = DEFAULT_INSIDE_IFACES  # regex over whole interface names
    inside_addrs: str = NO_ADDRESSES            # regex matched at the start of the remote's text
    icmp_types: frozenset = frozenset(ICMP_REQUESTS)        # ICMP types that are attempts
    icmp6_types: frozenset = frozenset(ICMPV6_REQUESTS)     # ICMPv6 types that are attempts
    never_protos: frozenset = frozenset(NEVER_ATTEMPT_PROTOCOLS)   # protocol numbers that never count

    def __post_init__(self):
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}: {self.direction!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}: {self.mode!r}")
        for name, value in (("logprefix", self.logprefix), ("insideifaces", self.inside_ifaces),
                            ("insideaddrs", self.inside_addrs)):
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{name} is not a valid regex: {exc}") from None

    def inside_iface(self, name: Optional[str]) -> bool:
        return bool(name) and _fullmatch(self.inside_ifaces, name)

    def inside_addr(self, addr: "Address") -> bool:
        return _match(self.inside_addrs, kernel_notation(addr))

    @classmethod
    def from_filter_options(cls, options: dict) -> "Policy":
        """The filter's [Init] options as a jail writes them (strings), e.g.
        {"direction": "out", "replyports": "53|123"}."""
        kwargs: dict = {}
        for key, value in options.items():
            if key in ("direction", "mode", "logprefix"):
                kwargs[key] = value
            elif key == "protocols":
                words = value.split("|")
                if value != ANY_PROTOCOL and not all(re.fullmatch(r"[A-Za-z0-9]+", w) for w in words):
                    raise ValueError(f"protocols must be PROTO= words joined by '|' (TCP|UDP, 47): {value!r}")
                kwargs["protocols"] = None if value == ANY_PROTOCOL else frozenset(words)
            elif key == "insideifaces":
                kwargs["inside_ifaces"] = value
            elif key == "insideaddrs":
                kwargs["inside_addrs"] = value
            elif key == "replyports":
                kwargs["reply_ports"] = frozenset(_numbers(key, value, 65536, "port numbers"))
            elif key in ("icmptypes", "icmp6types"):
                kwargs[{"icmptypes": "icmp_types", "icmp6types": "icmp6_types"}[key]] = \
                    frozenset(_numbers(key, value, 256, "ICMP types"))
            elif key == "neverprotos":
                kwargs["never_protos"] = frozenset(map(str, _numbers(key, value, 256, "protocol numbers")))
            else:
                raise ValueError(f"unknown netfilter filter option {key!r}")
        return cls(**kwargs)


# What a record is, beyond attempt or not: the categories `f2b-ext report` counts.
ATTEMPT = "attempt"
BACKSCATTER = "backscatter"          # TCP ACK/RST answering a packet forged with our address
ICMP_ANSWER = "icmp answer"          # ICMP reply or error: answers somebody's packet
REPLY_PORT = "reply port"            # UDP from a reply port
OWN_REPLY = "own reply"              # this host's own TCP answer, logged on output
INSIDE = "inside"                    # this host, its own client or transit, by interface
NEVER = "never banned"               # loopback, link-local, IPv4-embedding, unspecified
TO_MANY = "multicast/broadcast"
NOT_READ = "not read"                # other direction or protocol than the filter reads
OTHER = "other"                      # housekeeping, fragments without a header, nobody to ban
NOT_NETFILTER = "not netfilter"


@dataclass(frozen=True)
class Verdict:
    attempt: bool
    reason: str                     # a short phrase a person can read
    record: Optional[Record] = None
    kind: str = OTHER               # one of the categories above

    @property
    def remote(self) -> Optional[Address]:
        return self.record.remote if self.record else None


# --- Parsing -----------------------------------------------------------------------

# Syslog header before the kernel's message: classic, RFC 3339 (Debian 12 rsyslog),
# or fail2ban's journal rendering "HOST kernel: [uptime] MESSAGE"; uptime is optional.
_KERNEL_HEADER = re.compile(
    r"^(?P<stamp>(?:\d{4}-\d\d-\d\dT\S+|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?)\s+)?"
    r"(?:\S+\s+)?kernel:(?:\s?\[\s*[0-9.]+\])?\s+")


def kernel_message(line: str) -> Optional[tuple[str, str]]:
    """Split a syslog/journal line into (timestamp text, kernel message); None if the
    line is not from the kernel."""
    m = _KERNEL_HEADER.match(line)
    if not m:
        return None
    return (m.group("stamp") or "").strip(), line[m.end():]


class _Tokens:
    """The record's space-separated fields, consumed left to right."""
    __slots__ = ("items", "pos")

    def __init__(self, text: str):
        self.items = text.split(" ")
        self.items.append("")           # the end reads as an empty field: no bounds checks
        self.pos = 0

    def peek(self) -> str:
        return self.items[self.pos]

    def take(self) -> str:
        tok = self.items[self.pos]
        if tok or self.pos < len(self.items) - 1:     # never step past the end marker
            self.pos += 1
        return tok

    def field(self, name: str) -> Optional[str]:
        """Take `NAME=value` if it is next; None (and nothing taken) otherwise."""
        tok = self.items[self.pos]
        cut = len(name)
        if tok[cut:cut + 1] == "=" and tok.startswith(name):
            self.pos += 1
            return tok[cut + 1:]
        return None

    def rest(self) -> str:
        """The text not taken yet."""
        return " ".join(self.items[self.pos:-1])

    def reset(self, text: str) -> None:
        """Go on reading `text` (what is left after a skipped run)."""
        self.__init__(text)

    def flag(self, word: str) -> bool:
        if self.items[self.pos] == word:
            self.pos += 1
            return True
        return False


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")       # %pI4: no leading zeros, ASCII
_IPV6_FULL = re.compile(r"[0-9a-f]{4}(?::[0-9a-f]{4}){7}")


def _number(text: Optional[str]) -> Optional[int]:
    # the filter's __n: the kernel prints %u, ASCII digits without leading zeros; the
    # length bound also keeps int() off hostile 5,000-digit fields (Python's digit limit)
    if text and len(text) <= 10 and text.isascii() and text.isdigit() and (text[0] != "0" or text == "0"):
        return int(text)
    return None


def kernel_notation(addr: Address) -> str:
    """The address as the kernel prints it: dotted IPv4, fully expanded IPv6."""
    return addr.exploded if addr.version == 6 else str(addr)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _fullmatch(pattern: str, text: str) -> bool:
    return _compiled(pattern).fullmatch(text) is not None


def _match(pattern: str, text: str) -> bool:
    return _compiled(pattern).match(text) is not None


@functools.lru_cache(maxsize=65536)      # logs repeat addresses (the server's own in every line)
def _address(text: Optional[str]) -> Optional[Address]:
    """The kernel prints IPv4 dotted and IPv6 fully expanded (%pI6)."""
    if text is None or not (_IPV4.fullmatch(text) or _IPV6_FULL.fullmatch(text)):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=64)
def _head(logprefix: str) -> re.Pattern:
    """The filter's own head: the prefix, its delimiter, IN=; the first split found is final."""
    return re.compile(f"((?:{logprefix})){PREFIX_DELIMITER}IN=")


_TRAILING_DELIMITER = re.compile(r"[:\s]{1,2}\Z")


# What is skipped, not read (see the top of this module): the same languages as the
# filter's possessive runs, so that the filter and the core accept the same lines.
SKIPPED = {
    # MAC=dst:src:type [TUNNEL=a->b] / MACSRC= MACDST=dst [VPROTO= VID=] MACPROTO=: no "S"
    # before SRC=; only the destination MAC is looked at (broadcast)
    "l2": re.compile(r"(?:MAC=|MACSRC=[^ ]+ MACDST=)([^S]*)(?=SRC=)"),
    # IPv4: LEN TOS PREC TTL ID [CE] [DF] [MF] [FRAG:] [OPT (hex)]: no "P" but PREC's and OPT's
    "ip4": re.compile(r"LEN=[^P]*PREC=[^P]*P[^R]*ROTO="),
    # TCP, after SPT= DPT= (read): [SEQ ACK] WINDOW: no "R" before RES=
    "tcp": re.compile(r"SPT=([^ ]*) DPT=([^ ]*) [^R]*RES=0x[0-9a-f]{2} "),
}


def _skip_l2(tok: _Tokens) -> Optional[str] | bool:
    """The link layer, skipped up to SRC=: the destination MAC's text, None if there is
    no link layer, or False if what stands there is not one the filter reads."""
    if not tok.peek().startswith("MAC"):
        return None
    m = SKIPPED["l2"].match(tok.rest())
    if not m:
        return False
    tok.reset(tok.rest()[m.end():])
    return m.group(1)[:17] or None


def _skip_ip_fields(tok: _Tokens) -> bool:
    """LEN= and the IPv4 (skipped) or IPv6 header fields, up to PROTO=."""
    m = SKIPPED["ip4"].match(tok.rest())
    if m:
        tok.reset("PROTO=" + tok.rest()[m.end():])
        return True
    if not (_number(tok.field("LEN")) is not None and _number(tok.field("TC")) is not None and _number(tok.field("HOPLIMIT")) is not None
            and _number(tok.field("FLOWLBL")) is not None):
        return False
    # Extension headers, as many as the kernel prints: "OPT ( [FRAG:n [INCOMPLETE] ID:x |
    # AH SPI=0x..] ) " groups (with log-ip-options) or bare "FRAG:n [INCOMPLETE] ID:x".
    while True:
        if tok.peek() == "OPT" and tok.items[tok.pos + 1] == "(":
            tok.pos += 2
            if tok.peek().startswith("FRAG:"):
                if not _frag6(tok):
                    return False
            elif tok.peek() == "AH" and _SPI.fullmatch(tok.items[tok.pos + 1]):
                tok.pos += 2
            if not tok.flag(")"):
                return False
        elif tok.peek().startswith("FRAG:"):
            if not _frag6(tok):
                return False
        else:
            return True


_SPI = re.compile(r"SPI=0x[0-9a-f]+")
_FRAG_ID = re.compile(r"ID:[0-9a-f]{8}")


def _frag6(tok: _Tokens) -> bool:
    """IPv6 fragment header: FRAG:<offset> [INCOMPLETE] ID:<8 hex digits>."""
    if _number(tok.take()[5:]) is None:
        return False
    tok.flag("INCOMPLETE")
    return bool(_FRAG_ID.fullmatch(tok.take()))


def _proto_fields(tok: _Tokens, proto: str) -> dict:
    """Ports, flags and ICMP type after PROTO=; missing parts stay None (fragments,
    INCOMPLETE headers)."""
    out: dict = {}
    if proto in TRUNCATABLE and tok.peek() == "INCOMPLETE" and tok.items[tok.pos + 1].startswith("["):
        out["truncated"] = True
    elif proto == "TCP":
        # the ports read, then the fields up to RES= skipped
        m = SKIPPED["tcp"].match(tok.rest())
        spt, dpt = (_number(m.group(1)), _number(m.group(2))) if m else (None, None)
        if spt is None or dpt is None:
            return out
        out.update(spt=spt, dpt=dpt)
        tok.reset(tok.rest()[m.end():])
        flags = [word for word in TCP_FLAG_ORDER if tok.flag(word)]
        if tok.field("URGP") is not None:
            out["flags"] = frozenset(flags)
    elif proto in ("UDP", "UDPLITE"):
        spt, dpt = _number(tok.field("SPT")), _number(tok.field("DPT"))
        if spt is not None and dpt is not None and tok.field("LEN") is not None:   # the kernel always prints it
            out.update(spt=spt, dpt=dpt)
    elif proto in ("ICMP", "ICMPv6"):
        itype = _number(tok.field("TYPE"))
        if itype is not None and tok.field("CODE") is not None:
            out["icmp_type"] = itype
    return out


def parse_message(message: str, logprefix: str = ANY_PREFIX) -> Optional[Record]:
    """The netfilter record in a kernel message, or None if there is none (or its
    prefix does not match `logprefix`)."""
    m = _head(logprefix).match(message)
    if not m:
        return None
    # what the jail's logprefix matched; the default takes the delimiter in too (": ", " "),
    # which is not part of the prefix's name
    prefix = _TRAILING_DELIMITER.sub("", m.group(1)) if logprefix == ANY_PREFIX else m.group(1)
    return _parse_record(prefix, message[m.end() - 3:])


def _parse_record(prefix: str, text: str) -> Optional[Record]:
    tok = _Tokens(text)
    # IN OUT PHYSIN PHYSOUT (nf_log_syslog), or IN PHYSIN OUT PHYSOUT (older kernels)
    in_iface = tok.field("IN")
    physin = (tok.field("PHYSIN"),)
    out_iface = tok.field("OUT")
    physin += (tok.field("PHYSIN"),)
    physout = tok.field("PHYSOUT")
    if in_iface is None or out_iface is None or not (in_iface or out_iface):
        return None
    mac_dst = _skip_l2(tok) if in_iface else None
    if mac_dst is False:
        return None
    src, dst = _address(tok.field("SRC")), _address(tok.field("DST"))
    if src is None or dst is None or src.version != dst.version:
        return None
    if not _skip_ip_fields(tok):
        return None
    proto = tok.field("PROTO")
    if not proto:
        return None
    return Record(prefix=prefix, in_iface=in_iface, out_iface=out_iface, mac_dst=mac_dst,
                  src=src, dst=dst, proto=proto, physin=tuple(p for p in physin if p is not None),
                  physout=physout, **_proto_fields(tok, proto))


# --- Decision ----------------------------------------------------------------------

def _not_to_us_alone(rec: Record) -> Optional[str]:
    if rec.mac_dst and rec.mac_dst.startswith(BROADCAST_MAC):
        return "broadcast (MAC)"
    if any(rec.dst in net for net in MULTICAST_NETS):
        return "multicast destination"
    if rec.dst.version == 4 and rec.dst.packed[-1] == 255:
        return "broadcast destination"
    return None


def _tcp(rec: Record, policy: Policy) -> tuple[str, str]:
    if rec.flags is None:
        return OTHER, "TCP header missing or unreadable (a later fragment, or fields the kernel never prints so)"
    if rec.direction == "out":
        if TCP_OPEN_FLAG in rec.flags and not rec.flags & TCP_ANSWER_FLAGS:
            return ATTEMPT, "new outbound TCP connection"
        if rec.flags & TCP_ANSWER_FLAGS:
            return OWN_REPLY, "this host's own TCP reply (" + " ".join(sorted(rec.flags)) + ")"
        return OTHER, "outbound TCP, not a new connection"
    if policy.mode == "aggressive":
        return ATTEMPT, "TCP " + (" ".join(f for f in TCP_FLAG_ORDER if f in rec.flags) or "NULL") \
            + " (aggressive mode)"
    if rec.flags & TCP_ANSWER_FLAGS:
        return BACKSCATTER, "backscatter: TCP " + " ".join(
            f for f in TCP_FLAG_ORDER if f in rec.flags) + " answers a packet we never sent"
    return ATTEMPT, "TCP " + (" ".join(f for f in TCP_FLAG_ORDER if f in rec.flags) or "NULL")


def _udp(rec: Record, policy: Policy) -> tuple[str, str]:
    if rec.spt is None:
        return OTHER, f"{rec.proto} header missing or unreadable (a later fragment, or fields the kernel never prints so)"
    if rec.spt in policy.reply_ports:
        name = DEFAULT_REPLY_PORTS.get(rec.spt, "reply")
        return REPLY_PORT, f"reply port: UDP from port {rec.spt} ({name}) is a late reply or reflection"
    return ATTEMPT, f"{rec.proto} to port {rec.dpt}"


def _icmp(rec: Record, policy: Policy) -> tuple[str, str]:
    requests, names = (policy.icmp_types, ICMP_NAMES) if rec.proto == "ICMP" \
        else (policy.icmp6_types, ICMPV6_NAMES)
    if rec.icmp_type is None:
        return OTHER, f"{rec.proto} header missing or unreadable (a later fragment, or fields the kernel never prints so)"
    name = names.get(rec.icmp_type, f"type {rec.icmp_type}")
    if rec.icmp_type in requests:
        return ATTEMPT, f"{rec.proto} {name}"
    if rec.proto == "ICMPv6" and rec.icmp_type in ICMPV6_HOUSEKEEPING:
        return OTHER, f"ICMPv6 {name}: LAN housekeeping, never an attempt"
    return ICMP_ANSWER, f"{rec.proto} {name}: an answer or error, never an attempt"


# Protocols whose header the kernel reads, and reports cut short as "INCOMPLETE [n bytes]".
# One rule for all: a truncated transport header is an attempt. No network stack answers
# with a cut-short header, so its sender crafted it (nmap -sO, tiny-fragment evasion).
TRUNCATABLE = frozenset({"TCP", "UDP", "UDPLITE", "ICMP", "ICMPv6", "ESP", "AH"})

PROTOCOL_RULES = {"TCP": _tcp, "UDP": _udp, "UDPLITE": _udp, "ICMP": _icmp, "ICMPv6": _icmp}


def protocol_name(proto: str) -> str:
    """'47' -> '47 (GRE)'; words the kernel prints by name stay as they are."""
    return f"{proto} ({PROTOCOL_NAMES[proto]})" if proto in PROTOCOL_NAMES else proto


def classify(rec: Optional[Record], policy: Policy = Policy()) -> Verdict:
    """Is this record an attempt by its remote party, under `policy`?"""
    if rec is None:
        return Verdict(False, "not a netfilter LOG line", kind=NOT_NETFILTER)
    if policy.direction != "any" and rec.direction != policy.direction:
        return Verdict(False, f"direction {rec.direction}, filter reads {policy.direction}", rec, NOT_READ)
    why = _inside(rec, policy)
    if why:
        return Verdict(False, why, rec, INSIDE)
    why = _not_to_us_alone(rec)
    if why:
        return Verdict(False, why, rec, TO_MANY)
    if policy.protocols is not None and rec.proto not in policy.protocols:
        return Verdict(False, f"protocol {protocol_name(rec.proto)}, filter reads "
                              + "|".join(sorted(policy.protocols)), rec, NOT_READ)
    rule = PROTOCOL_RULES.get(rec.proto)
    if rec.truncated:
        kind, reason = ATTEMPT, (f"{rec.proto} header cut short (INCOMPLETE): no network stack "
                                 "answers so, its sender crafted it")
    elif rule:
        kind, reason = rule(rec, policy)
    elif rec.proto in policy.never_protos:
        kind, reason = OTHER, (f"{NEVER_ATTEMPT_PROTOCOLS[rec.proto]} is LAN housekeeping" if rec.proto in
                               NEVER_ATTEMPT_PROTOCOLS else f"protocol {protocol_name(rec.proto)} never counts (neverprotos)")
    elif _number(rec.proto) is not None or rec.proto in ("ESP", "AH"):
        kind, reason = ATTEMPT, f"protocol {protocol_name(rec.proto)} sent unsolicited"
    else:
        kind, reason = OTHER, f"unknown protocol {rec.proto!r}"
    if kind == ATTEMPT:
        # whatever the packet, some remotes are never banned (checked last, so that a
        # non-attempt keeps its own category: backscatter, ICMP answer, housekeeping)
        why = never_remote(rec.remote)
        if why:
            return Verdict(False, f"{why} ({reason})", rec, NEVER)
        if policy.inside_addr(rec.remote):
            return Verdict(False, f"inside address {rec.remote} (insideaddrs): this host's own "
                                  f"client ({reason})", rec, INSIDE)
        if rec.forwarded:
            reason += f" (forwarded from {rec.in_iface} to inside {_exit(rec)})"
    return Verdict(kind == ATTEMPT, reason, rec, kind)


def never_remote(addr: Address) -> Optional[str]:
    """Why `addr` is never banned (NEVER_REMOTE), or None."""
    for net, why in NEVER_REMOTE:
        if addr in net:
            return why
    return None


def _exit(rec: Record) -> str:
    return rec.out_iface if not rec.physout else f"{rec.out_iface} (port {rec.physout})"


def _inside(rec: Record, policy: Policy) -> Optional[str]:
    """Why the record's remote is this host itself or its own client, by interface."""
    if rec.direction == "out":
        if rec.out_iface == LOOPBACK_IFACE:
            return "loopback interface (OUT=lo): this host talking to itself"
        for name in (rec.out_iface, rec.physout):
            if policy.inside_iface(name):
                return f"sent to inside interface {name}: this host's own client"
        return None
    if rec.in_iface == LOOPBACK_IFACE:
        return "loopback interface (IN=lo): this host talking to itself"
    for name in (rec.in_iface, *rec.physin):
        if policy.inside_iface(name):
            return f"arrived on inside interface {name}: this host's own client (container, VM)"
    if rec.forwarded and not (policy.inside_iface(rec.out_iface) or policy.inside_iface(rec.physout)):
        return (f"forwarded from {rec.in_iface} to {_exit(rec)}, neither named inside: an inside "
                "client's outbound packet or transit (name the inside with insideifaces)")
    return None


def judge_line(line: str, policy: Policy = Policy()) -> Verdict:
    """A whole log line in, a verdict out."""
    split = kernel_message(line)
    if split is None:
        return Verdict(False, "not a kernel line", kind=NOT_NETFILTER)
    verdict = classify(parse_message(split[1], policy.logprefix), policy)
    if verdict.kind == NOT_NETFILTER and "IN=" in split[1] and "SRC=" in split[1]:
        return Verdict(False, "not a record the kernel prints (an address or number not in its "
                              "notation, a field out of place, or another LOG prefix)", kind=NOT_NETFILTER)
    return verdict

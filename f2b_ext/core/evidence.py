"""Evidence: what a ban's trigger proves about who sent it, and what it may buy.

How it works
------------
A line in a firewall log proves only that *someone* sent a packet claiming an address.
Nothing binds an inbound packet's source to its sender unless a handshake completed, and
for a logged (dropped) packet none did: the firewall refused the SYN. So the evidence
behind a ban is one of three kinds, strongest first:

  proven     the remote completed a TCP handshake with this host: an application logged
             what it did on an established connection (sshd, a web server). A jail's
             filter that captures neither a direction nor a protocol reads such a log.
  outbound   this host sent the packet (netfilter's OUT lines, ipfw's `out`): nobody
             spoofed the remote, but any local process, or whoever can make the server
             call a URL (a webhook, a mail bounce), chose it. Real, yet no proof of an
             attack.
  forgeable  an inbound packet the kernel logged, whatever its protocol (TCP SYN, UDP,
             ICMP, GRE), or a half-open connection synwatch saw (seed 002 is a SYN flood
             from forged sources). Anyone who can send packets can write these lines.

`classify()` reads the kind from the filter's captures (F-DIR, F-PROTO): a table, below.
`RULES` says what each kind may buy, as a table a reader can check:

  climbs_wide   may count on the wide rungs (/16, /48) without the admin's opt-in
  schedule      which unban schedule its escalations get: the full, growing one, or the
                short, non-growing `forged` one
  breaker       its escalations are bounded by the circuit breaker (per hour, space held)

Peers (remotes this host talked to itself) are protected per jail, by subnet-escalate's
`peers` parameter: on in every jail reading inbound lines, off in the outbound jail,
which must still block a call-home to a remote this host once reached.

A prefix's evidence is the weakest kind it needed: five hosts of a /24, three proven and
two forgeable, with five needed, is forgeable evidence (`weakest_needed`). Nothing here
does I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Optional


class Evidence(IntEnum):
    """Strength of evidence; a larger value proves more."""
    FORGEABLE = 0
    OUTBOUND = 1
    PROVEN = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Rule:
    climbs_wide: bool
    schedule: str          # "full" or "forged"
    breaker: bool


#                     climbs_wide  schedule  breaker
RULES = {
    Evidence.PROVEN:    Rule(True,  "full",   False),
    Evidence.OUTBOUND:  Rule(False, "full",   True),
    Evidence.FORGEABLE: Rule(False, "forged", True),
}

# The filter's F-DIR (netfilter's OUT, ipfw's in/out), lower case -> kind. A direction
# not listed (in) is a packet that arrived: forgeable. netfilter.conf captures no dir on
# inbound matches (a capture fail2ban pays for on every match): its protocol alone says
# forgeable, the table's third row.
DIRECTIONS = {"out": Evidence.OUTBOUND}


def classify(proto: Optional[str], direction: Optional[str]) -> Evidence:
    """The kind of evidence a ban with these captures rests on.

    | F-DIR        | F-PROTO  | kind      |
    |--------------|----------|-----------|
    | out          | any      | outbound  |
    | in, ...      | any      | forgeable |
    | none         | given    | forgeable | (kernel evidence without a direction: netfilter's
    |              |          |           |  inbound matches, synwatch)
    | none         | none     | proven    | (an application's log: the handshake completed)
    """
    if direction:
        return DIRECTIONS.get(direction.lower(), Evidence.FORGEABLE)
    return Evidence.FORGEABLE if proto else Evidence.PROVEN


def parse(text: str) -> Evidence:
    """'proven' | 'outbound' | 'forgeable' -> Evidence (ValueError otherwise)."""
    try:
        return Evidence[text.strip().upper()]
    except KeyError:
        raise ValueError(f"{text!r} is not one of proven, outbound, forgeable") from None


def weakest_needed(kinds: Iterable[Evidence], need: int) -> Optional[Evidence]:
    """The weakest kind among the `need` strongest pieces of evidence: what reaching the
    threshold rested on. None when there are fewer than `need`."""
    ranked = sorted(kinds, reverse=True)
    return ranked[need - 1] if len(ranked) >= need else None

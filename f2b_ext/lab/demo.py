"""Adapter: `f2b-ext demo`, the live demonstration on this machine's kernel.

How it works: builds the live lab (f2b_ext.lab.live: two network namespaces, the seeds'
firewall, rsyslog, a private fail2ban-server), then plays the seeds' attacks (ACTS)
one after another. After each it shows the kernel's log lines as they arrived,
condensed to the fields that matter and with the filter's verdict on each, what
fail2ban did, and what the kernel now does with a probe from the attacker. It ends
with `fail2ban-client status`, the escalations and the upcoming unbans, watches the
escalated /24 be released on schedule, and tears everything down, also on Ctrl-C
or SIGTERM. Nothing leaves the namespaces; only documentation ranges are used.
"""
from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from f2b_ext.core import netfilter as nf
from f2b_ext.lab.live import PROBE_PORT, LiveLab, LiveSettings
from f2b_ext.lab.netns import SERVER_V4

SCHEDULE_FIRST = 15           # seconds the escalated /24 is banned the first time


class Tail:
    """New complete lines of a file since the last call."""

    def __init__(self, path: Path):
        self.path, self.pos = path, 0

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                data = fh.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.pos += end
        return data[:end].decode("utf-8", "replace").splitlines()


def condensed(line: str) -> str:
    """A kernel LOG line as a person reads it, with the filter's verdict."""
    split = nf.kernel_message(line)
    rec = nf.parse_message(split[1]) if split else None
    if rec is None:
        return line[:120]
    verdict = nf.classify(rec, nf.Policy(direction=rec.direction))
    port = f"/{rec.dpt}" if rec.dpt is not None else ""
    flags = " " + " ".join(sorted(rec.flags)) if rec.flags else ""
    icmp = f" type {rec.icmp_type}" if rec.icmp_type is not None else ""
    proto = PROTOCOL_NAMES.get(rec.proto, rec.proto)
    what = f"{rec.prefix.strip()} {rec.src} -> {rec.dst} {proto}{port}{flags}{icmp}"
    judged = f"attempt by {verdict.remote}" if verdict.attempt else f"ignored: {verdict.reason}"
    return f"{what:<64} {judged}"


PROTOCOL_NAMES = {"47": "GRE", "50": "ESP", "51": "AH", "132": "SCTP"}
FAIL2BAN_EVENTS = (" Ban ", " Unban ", " Restore Ban ", " Escalate ")


@dataclass
class Act:
    title: str
    seed: str
    play: Callable[["Demo"], None]


class Demo:
    def __init__(self, live: LiveLab, out):
        self.live, self.out = live, out
        self.kernel = Tail(live.rsyslog.netfilter_log)
        self.fail2ban = Tail(live.f2b.dir / "fail2ban.log")
        self.surprises = 0

    def say(self, text: str = ""):
        print(text, flush=True)

    def show_new_lines(self, limit: int = 6):
        lines = self.kernel.read()
        for line in lines[:limit]:
            self.say("    kernel    " + condensed(line))
        if len(lines) > limit:
            self.say(self.out.dim(f"    kernel    ... and {len(lines) - limit} more lines like these"))
        for line in self.fail2ban.read():
            if any(event in line for event in FAIL2BAN_EVENTS):
                event = line.split(": ", 1)[-1].split(None, 1)[-1]       # without the level
                self.say("    fail2ban  " + self.out.green(event.strip()))

    def probe(self, src: str, expect_answer: bool):
        # an answer is waited for (a loaded machine may deliver it late; a dropped source
        # never gets one); a drop is one probe's silence
        answered = self.live.lab.answered_within(src, PROBE_PORT) if expect_answer else self.live.answered(src)
        word = "answered" if answered else "no answer"
        ok = answered == expect_answer
        self.surprises += not ok
        mark = self.out.green("as expected") if ok else self.out.red("UNEXPECTED")
        self.say(f"    probe     SYN {src} -> {SERVER_V4}:{PROBE_PORT}  {word} ({mark})")
        return ok

    def wait_blocked(self, src: str, started: float, timeout: float = 15.0) -> bool:
        blocked = self.live.until(lambda: not self.live.answered(src), timeout)
        if blocked:
            self.say(f"    kernel    drops {src} {time.monotonic() - started:.1f} s after its first packet")
        else:
            self.surprises += 1
            self.say(self.out.red(f"    kernel    still answers {src} {timeout:.0f} s later"))
        return bool(blocked)


# -- the seeds' attacks ------------------------------------------------------------------

def port_scan(d: Demo):
    src = "203.0.113.10"
    d.probe(src, expect_answer=True)
    start = time.monotonic()
    d.live.syn_scan(src)
    d.wait_blocked(src, start)
    d.show_new_lines()
    d.probe(src, expect_answer=False)


def gre_spam(d: Demo):
    src = "198.18.0.47"
    start = time.monotonic()
    d.live.gre(src, count=5)
    d.wait_blocked(src, start)
    d.show_new_lines()
    d.probe(src, expect_answer=False)


def backscatter(d: Demo):
    for victim, sport in (("203.0.113.80", 80), ("203.0.113.43", 443)):
        d.live.backscatter(victim, sport)
    d.live.until(lambda: len(d.live.log_lines("203.0.113.43 ")) >= 2, 3)
    time.sleep(0.6)                 # fail2ban reads them (and bans nobody)
    d.show_new_lines()
    banned = ({"203.0.113.80", "203.0.113.43"} & (set(d.live.bans("netfilter-in")) | set(d.live.bans("netfilter-out"))))
    if banned:
        d.surprises += 1
        d.say(d.out.red(f"    fail2ban  banned a victim: {', '.join(sorted(banned))}"))
    else:
        d.say("    fail2ban  banned nobody: the SYN-ACK senders are victims of a forgery, not attackers")
    d.probe("203.0.113.80", expect_answer=True)


def forged_flood(d: Demo):
    d.say("    six forged sources of 198.51.100.0/24 knock; 198.51.100.99 never sends anything")
    d.probe("198.51.100.99", expect_answer=True)
    start = time.monotonic()
    for i in range(11, 17):
        d.live.syn_scan(f"198.51.100.{i}", ports=(80, 443, 8080))
    d.live.until(lambda: "198.51.100.0/24" in d.live.bans(), 15)
    d.wait_blocked("198.51.100.99", start)
    d.show_new_lines(limit=4)
    d.probe("198.51.100.99", expect_answer=False)


def call_home(d: Demo):
    home = "203.0.113.66"
    listeners = [d.live.lab.listen(443), d.live.lab.listen(4444)]
    try:
        d.say(f"    server connects to {home}:443 (allowed egress): {d.live.call_home(home, 443)}")
        d.say(f"    server connects to {home}:4444 (a call-home, logged UNKNOWN_OUTGOING)")
        d.live.call_home(home, 4444)
        d.live.until(lambda: not d.live.call_home(home, 443), 15)
        d.show_new_lines()
        d.say(f"    server connects to {home}:443 again: {d.live.call_home(home, 443)}  (egress to it is blocked)")
    finally:
        for sock in listeners:
            sock.close()


ACTS = (
    Act("A port scan", "seed 003", port_scan),
    Act("GRE spam", "seed 000", gre_spam),
    Act("Backscatter: SYN-ACKs answering someone else's forgery of this server", "seed 001", backscatter),
    Act("A forged-source SYN flood across one /24", "seed 002", forged_flood),
    Act("An outbound call-home", "seed 001", call_home),
)


def run(out, firewall: str = "nft", banaction: str = "nftset") -> int:
    """Play the demo; 0 if every outcome was as expected."""
    signal.signal(signal.SIGTERM, _interrupt)
    settings = LiveSettings(firewall=firewall, banaction=banaction, bantime=600, schedule=f"{SCHEDULE_FIRST}s 1h 1d", hosts=6)
    print(out.bold("f2b-ext live demo") + f": a server ({SERVER_V4}) and 'the Internet' in two network namespaces "
          "on this kernel;\n  firewall: the seeds' rules (" + firewall + "), log: rsyslog imklog -> netfilter.log, "
          f"fail2ban-server with jails netfilter-in and netfilter-out ({banaction}).", flush=True)
    with LiveLab(settings) as live:
        demo = Demo(live, out)
        for n, act in enumerate(ACTS, 1):
            demo.say()
            demo.say(out.bold(f"{n}. {act.title}") + out.dim(f"  ({act.seed})"))
            act.play(demo)
        demo.say()
        for jail in ("netfilter-in", "netfilter-out"):
            demo.say(out.bold(f"$ fail2ban-client status {jail}"))
            demo.say(live.f2b.client("status", jail).stdout.rstrip())
        demo.say(out.bold("\nEscalations (subnet-escalate):"))
        demo.say(_indent(live.action_property("netfilter-in", "subnet-escalate", "escalations")))
        demo.say(out.bold("Upcoming unbans, soonest first:"))
        demo.say(_indent(live.action_property("netfilter-in", "subnet-escalate", "unbans")))
        demo.say(out.bold(f"\nWaiting for 198.51.100.0/24's first schedule step ({SCHEDULE_FIRST} s) to end..."))
        released = live.until(lambda: live.answered("198.51.100.99"), SCHEDULE_FIRST + 5, every=0.5)
        # fail2ban drops the ticket from its list, then logs the Unban line shown below
        live.until(lambda: "198.51.100.0/24" not in live.bans() and " Unban 198.51.100.0/24" in live.f2b.server_log(), 15)
        demo.show_new_lines()
        demo.probe("198.51.100.99", expect_answer=True)
        if not released:
            demo.surprises += 1
        demo.say("\nCleaning up: fail2ban, rsyslog, the namespaces and the sysctl go away now.")
    if demo.surprises:
        print(out.red(f"{demo.surprises} outcome(s) were not as expected"))
    return 1 if demo.surprises else 0


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.strip().splitlines())


def _interrupt(*_):
    raise KeyboardInterrupt

#!/usr/bin/env python3
"""Regenerate tests/samples/netfilter-captured from the real kernel (root).

Builds the lab (two network namespaces), applies each firewall profile of
tests/kernel_cases.py (iptables LOG with the seeds' prefixes, --log-tcp-options,
--log-ip-options, --log-uid; nftables `log flags all`; ufw's prefix; a bare -j LOG),
plays every probe, and writes the kernel's lines in fail2ban's failJSON convention.
The expectations come from the probe table (what was sent), never from the filter.

    make samples            # or: .venv/bin/python tests/capture_samples.py [OUTPUT]
"""
from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from f2b_ext.lab.netns import Lab  # noqa: E402
import kernel_cases as kc  # noqa: E402

STYLES = ("rfc3339", "classic", "nouptime")
# Times the renderings carry, as failJSON "time": local wall-clock time in fail2ban's
# sample-test zone (CET), a stamp without a year read against its "now" (2005-08-14),
# as tests/conftest.py's upstream_clock and fail2ban-testcases read them.
STYLE_TIME = {"rfc3339": "2026-11-21T09:08:21", "classic": "2004-11-21T08:08:21",
              "nouptime": "2004-11-21T08:08:21"}


def _host(addr: str) -> str:
    return str(ipaddress.ip_address(addr))


def _entry(probe, rec, expect: bool, style: str, desc_extra: str = "") -> list[str]:
    desc = probe.name if probe else "kernel's answer or neighbour discovery"
    data = {"time": STYLE_TIME.get(style), "match": expect}
    if style == "journal":
        data.pop("time")
    if expect:
        data["host"] = _host(probe.remote)
    data["desc"] = desc + desc_extra
    line = rec.syslog(style, host="lab")
    return [f"# failJSON: {json.dumps(data)}", line]


def write(path: Path, captured: dict[str, list]) -> int:
    out = ["# Kernel netfilter LOG lines captured from a real kernel by tests/capture_samples.py:",
           "# namespaces, LOG rules in several styles, crafted packets. Do not edit by hand.",
           "# Expectations come from the probe table in tests/kernel_cases.py.", ""]
    n = 0

    def section(title, options, records, expect_of, styles=STYLES):
        nonlocal n
        out.extend([f"# ---- {title}", f"# filterOptions: {json.dumps(options)}", ""])
        for i, (probe, rec) in enumerate(records):
            style = styles[i % len(styles)]
            out.extend(_entry(probe, rec, expect_of(probe, rec), style))
            n += 1
        out.append("")

    everything = [pr for prof in kc.PROFILES for pr in captured[prof]]
    # enough of every profile to show each prefix style, not all of it again
    heads = [pr for prof in kc.PROFILES for pr in captured[prof][:40]]
    section("direction=in (default), any prefix, every firewall profile", {},
            everything, lambda p, r: bool(p and p.expect_in))
    seedlike = captured["firewalld"]
    section("direction=out", {"direction": "out"}, seedlike,
            lambda p, r: bool(p and p.expect_out))
    section("direction=out, the seed's UNKNOWN_OUTGOING prefix, nftables flags all",
            {"direction": "out", "logprefix": "UNKNOWN_OUTGOING"}, captured["nft-all"],
            lambda p, r: bool(p and p.expect_out))
    section("direction=any", {"direction": "any"}, captured["verbose"],
            lambda p, r: bool(p and (p.expect_in or p.expect_out)))
    # only the probes' own packets: the kernels' TCP answers count here too
    section("mode=aggressive: inbound ACK/RST count too", {"mode": "aggressive"},
            [pr for pr in captured["ufw"] if pr[0]], lambda p, r: bool(p and p.expect_aggressive))
    section("logprefix=FINAL_REJECT: other prefixes never match", {"logprefix": "FINAL_REJECT"},
            heads,
            lambda p, r: bool(p and p.expect_in and r.message.startswith("FINAL_REJECT: ")))
    section("logprefix for ufw", {"logprefix": r"\[UFW BLOCK\]"}, heads,
            lambda p, r: bool(p and p.expect_in and r.message.startswith("[UFW BLOCK] ")))
    section("journal (backend = systemd)", {"logtype": "journal"}, captured["nft-all"],
            lambda p, r: bool(p and p.expect_in), styles=("journal",))
    path.write_text("\n".join(out) + "\n")
    return n


def capture_all() -> dict[str, list]:
    captured = {}
    with Lab() as lab:
        for profile in kc.PROFILES:
            pairs = kc.capture(lab, profile)
            missing = [p.name for p in kc.PROBES if not any(q is p for q, _ in pairs)]
            if missing:
                print(f"{profile}: no kernel line for: {', '.join(missing)}", file=sys.stderr)
            captured[profile] = pairs
    return captured


def write_container(path: Path, pairs: list) -> int:
    """The container host's records (kernel_cases.capture_container) in failJSON."""
    out = ["# Kernel netfilter LOG lines captured from a real kernel by tests/capture_samples.py:",
           "# a container host (a \"container\" namespace behind a bridge docker0 in the server,",
           "# Docker-like NAT: a published port DNATed to it, its own traffic masqueraded),",
           "# LOG in FORWARD and INPUT. Do not edit by hand. Expectations come from the case table",
           "# in tests/kernel_cases.py (container_cases), never from the filter.", "",
           "# ---- direction=in (default): inbound to a published port counts, the container never",
           "# filterOptions: {}", ""]
    n = 0
    for i, (case, rec) in enumerate(pairs):
        style = STYLES[i % len(STYLES)]
        expect = bool(case and case.expect_in)
        data = {"time": STYLE_TIME[style], "match": expect}
        if expect:
            data["host"] = _host(case.remote)
        data["desc"] = case.name if case else "an answer to one of the cases (RST, ICMP error)"
        out.extend([f"# failJSON: {json.dumps(data)}", rec.syslog(style, host="lab")])
        n += 1
    path.write_text("\n".join(out) + "\n")
    return n


def capture_container() -> list:
    with Lab() as lab:
        pairs = kc.capture_container(lab)
    missing = [c.name for c in kc.container_cases() if not any(q and q.name == c.name for q, _ in pairs)]
    if missing:
        print(f"container: no kernel line for: {', '.join(missing)}", file=sys.stderr)
    return pairs


def main(argv: list[str]) -> int:
    """[OUTPUT] regenerates netfilter-captured and netfilter-container; --container only the latter."""
    container = HERE / "samples" / "netfilter-container"
    if "--container" not in argv:
        target = Path(argv[1]) if len(argv) > 1 else HERE / "samples" / "netfilter-captured"
        n = write(target, capture_all())
        print(f"wrote {n} samples to {target}")
    n = write_container(container, capture_container())
    print(f"wrote {n} samples to {container}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

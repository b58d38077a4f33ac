"""The real kernel, now: build the lab, play the probes under two firewall styles, and
judge each fresh kernel line with fail2ban's filter and with the core. This is what
keeps tests/samples/netfilter-captured honest on the kernel CI runs on."""
from __future__ import annotations

import ipaddress

import pytest

from conftest import is_root
from f2b_ext import netfilter as nf

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")]


@pytest.fixture(scope="module")
def captured():
    import kernel_cases as kc
    from f2b_ext.lab import Lab
    out = {}
    with Lab() as lab:
        for profile in ("firewalld", "nft-all"):
            out[profile] = kc.capture(lab, profile)
    return out


@pytest.mark.parametrize("profile", ["firewalld", "nft-all"])
def test_every_probe_left_a_line(captured, profile):
    import kernel_cases as kc
    seen = {id(p) for p, _ in captured[profile] if p}
    assert [p.name for p in kc.PROBES if id(p) not in seen] == []


@pytest.mark.parametrize("profile", ["firewalld", "nft-all"])
@pytest.mark.parametrize("direction", ["in", "out"])
@pytest.mark.parametrize("style", ["rfc3339", "classic", "nouptime"])
def test_fresh_kernel_lines(runner, captured, profile, direction, style):
    run = runner({"direction": direction})
    policy = nf.Policy(direction=direction)
    wrong = []
    for probe, rec in captured[profile]:
        want = bool(probe and (probe.expect_in if direction == "in" else probe.expect_out))
        line = rec.syslog(style)
        found = run.match(line)
        verdict = nf.judge_line(line, policy)
        got_ips = [m.ip for m in found]
        ok = bool(found) == want == verdict.attempt
        if want and ok:
            ok = got_ips == [str(ipaddress.ip_address(probe.remote))] and verdict.remote == ipaddress.ip_address(probe.remote)
        if not ok:
            wrong.append((probe.name if probe else "answer", got_ips, verdict.reason, rec.message))
    assert wrong == []

"""The real kernel, now: build the lab, play the probes under two firewall styles, and
judge each fresh kernel line with fail2ban's filter and with the core. This is what
keeps tests/samples/netfilter-captured honest on the kernel CI runs on."""
from __future__ import annotations

import ipaddress

import pytest

from conftest import is_root
from f2b_ext.core import netfilter as nf

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")]


@pytest.fixture(scope="module")
def captured():
    import kernel_cases as kc
    from f2b_ext.lab.netns import Lab
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


def test_container_host_fresh_lines(runner):
    """A container behind docker0 with Docker-like NAT, on the real kernel: an outsider's
    SYN to the published port (forwarded into docker0) is banned; the container's own
    traffic, out or to the host, and every answer are not (filter and core alike)."""
    import kernel_cases as kc
    from f2b_ext.lab.netns import Lab
    with Lab() as lab:
        pairs = kc.capture_container(lab)
    names = {case.name for case, _ in pairs if case}
    assert names == {case.name for case in kc.container_cases()}
    wrong = []
    for case, rec in pairs:
        want = bool(case and case.expect_in)
        line = rec.syslog("rfc3339")
        found, verdict = runner({}).match(line), nf.judge_line(line)
        ok = bool(found) == want == verdict.attempt
        if want and ok:
            ok = [m.ip for m in found] == [case.remote] and str(verdict.remote) == case.remote
        if not ok:
            wrong.append((case.name if case else "answer", [m.ip for m in found], verdict.reason, rec.message))
    assert wrong == []

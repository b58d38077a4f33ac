"""The lab itself: it removes every namespace it made, even when setup fails half way,
and nothing it did not make."""
from __future__ import annotations

import pytest

from conftest import is_root

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")]


def namespaces() -> set[str]:
    from f2b_ext.lab.netns import sh
    return {line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()}


def test_a_setup_failing_half_way_leaves_no_namespace_and_restores_sysctls():
    from f2b_ext.lab.netns import NF_LOG_ALL_NETNS, Lab, LabError, sh
    lab = Lab()
    before = NF_LOG_ALL_NETNS.read_text()
    sh("ip", "netns", "add", lab.remote)          # someone else's: the lab's second `netns add` fails
    try:
        with pytest.raises(LabError, match="netns add"):
            with lab:
                pass
        assert lab.server not in namespaces(), "the server namespace leaked"
        assert lab.remote in namespaces(), "a namespace the lab did not make must stay"
        assert NF_LOG_ALL_NETNS.read_text() == before
    finally:
        sh("ip", "netns", "del", lab.remote, check=False)


def host_links() -> set[str]:
    from f2b_ext.lab.netns import sh
    return {line.split(":")[1].strip().split("@")[0] for line in sh("ip", "-o", "link", "show").splitlines()}


def lab_processes(lab) -> list[str]:
    """Command lines of processes that use the fleet lab's directory (nats-servers,
    fail2ban-servers, agents)."""
    import os
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(lab.dir) in cmdline:
            found.append(cmdline)
    return found


def test_a_fleet_lab_whose_namespaces_cannot_all_be_made_leaves_none():
    from f2b_ext.lab.fleet import FleetLab
    from f2b_ext.lab.netns import LabError, sh
    links = host_links()
    lab = FleetLab()
    sh("ip", "netns", "add", lab.ns["b"])          # someone else's: made after the hub and a
    try:
        with pytest.raises(LabError, match="netns add"):
            with lab:
                pass
        assert {lab.hub, lab.ns["a"]}.isdisjoint(namespaces()), "the hub or a's namespace leaked"
        assert lab.ns["b"] in namespaces(), "a namespace the lab did not make must stay"
        assert host_links() - links == set(), "a veth leaked into this machine's namespace"
        assert not lab.dir.exists()
    finally:
        sh("ip", "netns", "del", lab.ns["b"], check=False)


def test_a_fleet_lab_failing_with_its_servers_running_stops_them_and_removes_everything():
    """b's fail2ban cannot start (its directory is a file): by then the three
    nats-servers, a's fail2ban and a's agent run; none may outlive the failure."""
    import shutil
    if not shutil.which("nats-server"):
        pytest.skip("nats-server is not installed (make venv installs it)")
    # the lab's `fleet create` needs nats-py, which the trixie root does not carry (its run
    # leaves the fleet tests out, as the Makefile's test-trixie says)
    pytest.importorskip("nats", reason="nats-py is not installed (the fleet extra)")
    from f2b_ext.lab.fleet import FleetLab
    links = host_links()
    lab = FleetLab()
    (lab.dir / "f2b-b").write_text("in the way of b's fail2ban directory")
    with pytest.raises(OSError):
        with lab:
            pass
    assert list(lab.f2b) == ["a"] and lab.f2b["a"].proc is None, "a's fail2ban was started, then stopped"
    assert not set(lab.ns.values()) & namespaces() and lab.hub not in namespaces(), "a namespace leaked"
    assert host_links() - links == set(), "a veth leaked into this machine's namespace"
    assert lab_processes(lab) == [], "a process of the lab outlived it"
    assert not lab.dir.exists()

"""`f2b-ext demo --fleet`, run as a user runs it: every outcome as expected (a scan on A
dropped on B and C with its latency, the forged bans refused), and nothing left behind:
not on success, not when interrupted while the lab is built or while it plays."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT

from f2b_ext.lab.fleet_demo import environment_problems

problems = environment_problems()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(problems), reason="; ".join(problems))]

DEMO = [sys.executable, "-m", "f2b_ext", "demo", "--fleet"]


def leftovers(pid: int) -> list[str]:
    """The demo's namespaces and processes (named after its pid: f2bx<pid>-*, its lab's
    directory /tmp/f2bx-fleet-<pid>-*) still there, and its lab directory."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found = [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith(f"f2bx{pid}-")]
    found += [f"directory {d}" for d in Path(tempfile.gettempdir()).glob(f"f2bx-fleet-{pid}-*")]
    procs = subprocess.run(["pgrep", "-af", f"f2bx-fleet-{pid}-"], capture_output=True, text=True).stdout
    return found + [f"process {line}" for line in procs.splitlines()]


def test_the_fleet_demo_plays_every_act_as_expected_and_cleans_up():
    proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:] + err
    assert "UNEXPECTED" not in out and "\033[" not in out
    assert "FINAL_REJECT 203.0.113.10 -> 198.18.0.1 TCP/22 SYN" in out
    for n in "BC":
        assert f"server {n}  drops 203.0.113.10: in its kernel " in out
        latency = float(out.split(f"server {n}  drops 203.0.113.10: in its kernel ")[1].split(" s after A's ban")[0])
        assert 0 <= latency < 30
    assert "server A  refuses it: covers 192.0.2.53/32, protected here" in out
    assert "server B  refuses it: covers 192.0.2.53/32, protected by fleet server a" in out
    assert "no kernel holds 192.0.2.53" in out
    assert 'nats-server refuses it: nats: permissions violation for publish to "f2bx.bans.a"' in out
    assert "server b: connected, spool depth 0" in out
    assert leftovers(proc.pid) == []


def sigint_as_in_a_terminal():
    """The child's SIGINT as a terminal's foreground job has it: a shell's background
    job (a CI runner started with `&`, nohup) inherits SIGINT ignored, and Python then
    never turns it into KeyboardInterrupt, so Ctrl-C could not be tested there."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,when", [(signal.SIGTERM, "  up in "), (signal.SIGINT, "1. A port scan")],
                         ids=["SIGTERM-while-building", "SIGINT-while-playing"])
def test_an_interrupted_fleet_demo_cleans_up(sig, when):
    proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=sigint_as_in_a_terminal)
    seen = ""
    deadline = time.monotonic() + 120
    if when == "  up in ":
        while "Building it takes" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        time.sleep(4)            # inside FleetLab.build(): namespaces made, nats-servers starting
        assert "  up in " not in seen
    else:
        while when not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert when in seen, seen
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip() == "f2b-ext: interrupted", err
    assert leftovers(proc.pid) == []


def test_without_root_the_fleet_demo_says_why_in_one_line():
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *DEMO],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and r.stderr.startswith("f2b-ext: the fleet demo needs root"), r.stderr
    assert r.stderr.count("\n") == 1

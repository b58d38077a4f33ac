"""`f2b-ext demo` (the main job), run as a user runs it: every act's outcome as
expected, and nothing left behind: not on success, not on Ctrl-C or SIGTERM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from f2b_ext.lab.netns import NF_LOG_ALL_NETNS
from f2b_ext.lab.live import environment_problems

problems = environment_problems()
pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(problems), reason="; ".join(problems))]

DEMO = [sys.executable, "-m", "f2b_ext", "demo"]


def leftovers(before_sysctl: str) -> list[str]:
    found = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in netns.splitlines() if line.startswith("f2bx")]
    procs = subprocess.run(["pgrep", "-af", "f2bx-live"], capture_output=True, text=True).stdout
    found += [f"process {line}" for line in procs.splitlines()]
    if NF_LOG_ALL_NETNS.read_text().strip() != before_sysctl:
        found.append("nf_log_all_netns not restored")
    return found


def test_the_demo_plays_every_act_as_expected_and_cleans_up():
    before = NF_LOG_ALL_NETNS.read_text().strip()
    r = subprocess.run(DEMO, capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    out = r.stdout
    assert "UNEXPECTED" not in out and "\033[" not in out
    for act in ("1. A port scan", "2. GRE spam", "3. Backscatter", "4. A forged-source SYN flood", "5. An outbound"):
        assert act in out
    assert "FINAL_REJECT 203.0.113.10 -> 192.0.2.1 TCP/23 SYN" in out
    assert "ignored: backscatter" in out and "banned nobody" in out
    assert "Escalate 198.51.100.0/24 for 15s" in out and "Unban 198.51.100.0/24" in out
    assert "Status for the jail: netfilter-in" in out and "Upcoming unbans" in out
    assert leftovers(before) == []


def sigint_as_in_a_terminal():
    """The child's SIGINT as a terminal's foreground job has it: a shell's background
    job (a CI runner started with `&`, nohup) inherits SIGINT ignored, and Python then
    never turns it into KeyboardInterrupt, so Ctrl-C could not be tested there."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_demo_cleans_up(sig):
    before = NF_LOG_ALL_NETNS.read_text().strip()
    proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            preexec_fn=sigint_as_in_a_terminal)
    seen = ""
    deadline = time.monotonic() + 60
    while "2. GRE spam" not in seen and time.monotonic() < deadline:
        seen += proc.stdout.readline()
    assert "2. GRE spam" in seen, seen
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "f2b-ext: interrupted", err
    assert leftovers(before) == []


def test_without_root_the_demo_says_why_in_one_line():
    r = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *DEMO],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and r.stderr.startswith("f2b-ext: the live demo needs root"), r.stderr
    assert r.stderr.count("\n") == 1

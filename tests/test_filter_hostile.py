"""Malformed and hostile lines: never a crash, never a ban of a wrong address."""
from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from f2b_ext.core import netfilter as nf

GOOD = ("Nov 21 08:08:21 host kernel: [  444.910152] FINAL_REJECT: IN=eth0 OUT= "
        "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 SRC=203.0.113.7 DST=198.51.100.1 LEN=60 "
        "TOS=0x00 PREC=0x00 TTL=51 ID=5 DF PROTO=TCP SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0 ")
RECORD = GOOD.split("FINAL_REJECT: ", 1)[1]
HEADER = "Nov 21 08:08:21 host kernel: [  444.910152] "
REMOTE = "203.0.113.7"


def only_remote(runner, line, remote=REMOTE, policy=None):
    """Whatever fail2ban and the core say about `line`, the only address either may
    name is `remote`."""
    policy = policy or {}
    found = runner(policy).match(line)
    assert all(m.ip == remote for m in found), [m.ip for m in found]
    verdict = nf.judge_line(line, nf.Policy.from_filter_options(policy))
    if verdict.attempt:
        assert str(verdict.remote) == remote
    return found, verdict


def test_every_truncation(runner):
    for cut in range(len(GOOD) + 1):
        only_remote(runner, GOOD[:cut])


def test_non_utf8_bytes_in_a_file_read_by_fail2ban(confdir, tmp_path):
    """fail2ban-regex reads the file as fail2ban-server would; garbage lines cost nothing."""
    log = tmp_path / "kern.log"
    log.write_bytes(b"Nov 21 08:08:21 host kernel: [  1.0] FINAL_REJECT: IN=eth0 \xff\xfe\x80 OUT= SRC=\xc3\x28\n"
                    + GOOD.encode() + b"\n"
                    + GOOD.replace("SRC=203.0.113.7", "SRC=203.0.113.\xb7").encode("latin-1") + b"\n")
    out = subprocess.run(["fail2ban-regex", "-c", str(confdir), "--raw", "-o", "ip", str(log), "netfilter"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [REMOTE]


def test_surrogate_escaped_text(runner):
    line = GOOD.encode() + b"\xff\xfe"
    only_remote(runner, line.decode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("filler", ["A", " ", "=", "IN=", "SRC=198.51.100.66 ", "IN=eth0 OUT= ",
                                    "[SRC=198.51.100.66 DST=192.0.2.1 ", "SYN ", ":"])
@pytest.mark.parametrize("where", ["prefix", "tail"])
def test_one_megabyte_lines(runner, filler, where):
    """1 MB of hostile filler before or after a record: no crash, no wrong address.
    (How long the worst of these takes is in BENCHMARKS.md, not asserted here.)"""
    blob = filler * (1_000_000 // len(filler))
    line = HEADER + blob + RECORD if where == "prefix" else GOOD + blob
    found, verdict = only_remote(runner, line)
    if where == "tail":
        assert [m.ip for m in found] == [REMOTE] and verdict.attempt


def test_fake_src_inside_the_prefix(runner):
    line = HEADER + "X SRC=198.51.100.66 DST=192.0.2.1: " + RECORD
    # the default prefix holds no "=": such a line is refused whole
    found, _ = only_remote(runner, line)
    assert found == []
    # a prefix the admin spelled out is accepted, and still only the record's SRC counts
    found, _ = only_remote(runner, line, policy={"logprefix": r"X SRC=\S+ DST=\S+"})
    assert [m.ip for m in found] == [REMOTE]


def test_icmp_error_embedding_the_servers_own_address(runner):
    line = (HEADER + "FINAL_REJECT: IN=eth0 OUT= SRC=203.0.113.7 DST=198.51.100.1 LEN=56 TOS=0x00 "
            "PREC=0xC0 TTL=51 ID=9 PROTO=ICMP TYPE=3 CODE=3 [SRC=198.51.100.1 DST=203.0.113.66 LEN=40 "
            "TOS=0x00 PREC=0x00 TTL=1 ID=4 PROTO=TCP SPT=22 DPT=4444 WINDOW=1 RES=0x00 SYN URGP=0 ] ")
    for policy in ({}, {"direction": "any"}, {"mode": "aggressive"}, {"direction": "out"}):
        found, verdict = only_remote(runner, line, policy=policy)
        assert not found and not verdict.attempt


@settings(max_examples=500, deadline=None)
@given(prefix=st.text(max_size=200))
def test_any_prefix_text_never_shifts_the_address(runner, prefix):
    """Whatever text stands before the record, only the record's SRC may be banned."""
    only_remote(runner, HEADER + prefix + RECORD)


@settings(max_examples=500, deadline=None)
@given(junk=st.text(max_size=400))
def test_arbitrary_text_never_crashes_the_core(junk):
    nf.judge_line(junk)
    nf.judge_line(HEADER + junk)
    nf.parse_message(junk)


@pytest.mark.parametrize("command", [["report"], ["report", "--json"], ["test"]])
def test_a_5000_digit_field_never_aborts_report_or_test(tmp_path, command):
    """Issue 14: int() refuses more than 4,300 digits (ValueError); one hostile line
    used to end `f2b-ext report` and `test` with a traceback. It must cost nothing."""
    import sys
    from pathlib import Path
    huge = GOOD.replace("DPT=23", "DPT=" + "9" * 5000).replace("SRC=203.0.113.7", "SRC=203.0.113.8")
    log = tmp_path / "kern.log"
    log.write_text("\n".join([huge, GOOD, HEADER + RECORD.replace("TTL=51", "TTL=" + "1" * 5000)]) + "\n")
    r = subprocess.run([sys.executable, "-m", "f2b_ext", *command, str(log)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert REMOTE in r.stdout and "203.0.113.8" not in r.stdout.replace("203.0.113.80", "")

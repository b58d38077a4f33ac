"""f2b-ext synwatch: the pure core (parsers, tally, offenders, lines), its agreement with
filter.d/synrecv.conf, the command line, and both readers on the real kernel."""
from __future__ import annotations

import ipaddress
import random
import shutil
import struct
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, is_root
from f2b_ext.core import synwatch as sw

V4 = lambda a: (4, int(ipaddress.IPv4Address(a)))
V6 = lambda a: (6, int(ipaddress.IPv6Address(a)))


def entry(addr: str, port: int = 80) -> sw.HalfOpen:
    version, value = (V6 if ":" in addr else V4)(addr)
    return sw.HalfOpen(version, value, port)


def tally(entries, **thresholds) -> sw.Tally:
    return sw.Tally(sw.Thresholds(**thresholds)).feed(entries)


# --- netlink sock_diag messages -------------------------------------------------------

def diag_msg(family: int, state: int, port: int, remote: bytes, extra: bytes = b"") -> bytes:
    """An inet_diag_msg as the kernel sends it (linux/inet_diag.h), with a netlink header."""
    body = (struct.pack("=BBBB", family, state, 1, 0) + struct.pack(">HH", port, 40000)
            + b"\0" * 16 + remote.ljust(16, b"\0") + struct.pack("=I", 0) + b"\0" * 8
            + struct.pack("=IIIII", 0, 0, 0, 0, 0) + extra)
    return struct.pack("=IHHII", 16 + len(body), sw.SOCK_DIAG_BY_FAMILY, 2, 1, 0) + body


def done() -> bytes:
    return struct.pack("=IHHII", 20, sw.NLMSG_DONE, 2, 1, 0) + struct.pack("=i", 0)


def test_diag_request_is_a_dump_of_tcp_syn_recv():
    msg = sw.diag_request(10, seq=7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    family, proto, _, _, states = struct.unpack_from("=BBBBI", msg, 16)
    assert (length, kind, flags, seq) == (len(msg), 20, 0x301, 7) and len(msg) == 16 + 56
    assert (family, proto, states) == (10, 6, 1 << 3)


def test_parse_diag_reads_v4_v6_and_mapped_and_skips_other_states():
    mapped = b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address("203.0.113.9").packed
    buf = (diag_msg(2, 3, 80, ipaddress.IPv4Address("198.51.100.7").packed)
           + diag_msg(10, 3, 443, ipaddress.IPv6Address("2001:db8:5::7").packed, extra=b"\x08\0\x0f\0\0\0\0\0")
           + diag_msg(10, 3, 80, mapped)
           + diag_msg(2, 1, 22, ipaddress.IPv4Address("192.0.2.2").packed)        # ESTABLISHED
           + done())
    out = []
    assert sw.parse_diag(buf, out) is True
    assert out == [entry("198.51.100.7"), entry("2001:db8:5::7", 443), entry("203.0.113.9")]


def test_parse_diag_continues_until_done_and_reports_errors_and_truncation():
    out = []
    assert sw.parse_diag(diag_msg(2, 3, 80, b"\xc6\x33\x64\x07"), out) is False     # more to come
    error = struct.pack("=IHHII", 20, sw.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -13)
    with pytest.raises(sw.DiagError) as exc:
        sw.parse_diag(error, [])
    assert exc.value.errno == 13
    with pytest.raises(ValueError, match="truncated"):
        sw.parse_diag(diag_msg(2, 3, 80, b"\xc6\x33\x64\x07")[:-8] + b"", [])


# --- /proc/net/tcp{,6} rows ------------------------------------------------------------

PROC4 = "   1: 010200C0:0050 0771A8C6:9C47 03 00000000:00000000 01:0000002F 00000000     0        0 0 0 0000000043f82fa7"
PROC6_MAPPED = ("   1: 0000000000000000FFFF0000010200C0:0050 0000000000000000FFFF0000077100CB:9C47 03 "
                "00000000:00000000 01:0000002F 00000000     0        0 0 0 0000000043f82fa7")
PROC6 = ("   2: B80D0120000000000000000001000000:01BB B80D0120000005000000000007000000:9C47 03 "
         "00000000:00000000 01:0000002F 00000000     0        0 0 0 0000000043f82fa7")
LISTEN = "   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 434929 1"


def test_parse_proc_rows_little_endian():
    assert sw.parse_proc_row(PROC4, "little") == sw.HalfOpen(4, int(ipaddress.IPv4Address("198.168.113.7")), 80)
    assert sw.parse_proc_row(PROC6_MAPPED, "little") == entry("203.0.113.7", 80)
    assert sw.parse_proc_row(PROC6, "little") == entry("2001:db8:5::7", 443)
    assert sw.parse_proc_row(LISTEN, "little") is None


def test_parse_proc_rows_big_endian_and_garbage():
    assert sw.parse_proc_row("1: C0000201:0050 CB007107:9C47 03 0", "big") == entry("203.0.113.7", 80)
    for row in ("", "sl local_address rem_address st", "1: C0000201:0050 zz007107:9C47 03 0", "1: C0000201:0050 CB007107CB:9C47 03 0",
                "1: C0000201:zz CB007107:9C47 03 0",
                "1: C0000201:0050 CB00710:9C47 03 0", "1: C0000201 CB007107 03 0"):
        assert sw.parse_proc_row(row, "big") is None, row


# --- tally and offenders ------------------------------------------------------------------

def test_a_prefix_over_its_threshold_is_one_offender_and_its_hosts_are_not_repeated():
    entries = [entry(f"203.0.113.{i}") for i in range(1, 60)] + [entry("203.0.113.1")] * 30
    found = sw.offenders(tally(entries, host=20, net=50))
    assert found == [sw.Offender(ipaddress.ip_network("203.0.113.0/24"), 89, 80, 0, 59)]


def test_a_host_over_its_threshold_is_reported_alone():
    entries = [entry("198.51.100.7", 443)] * 25 + [entry("198.51.100.8", 443)] * 19
    found = sw.offenders(tally(entries, host=20, net=50))
    assert [(str(o.source), o.count, o.port, o.addresses) for o in found] == [("198.51.100.7/32", 25, 443, None)]


def test_ipv6_counts_per_64_and_mapped_ipv4_counts_as_ipv4():
    entries = [entry(f"2001:db8:5::{i:x}") for i in range(1, 41)] + [entry(f"2001:db8:6::{i:x}") for i in range(39)]
    found = sw.offenders(tally(entries, net=40))
    assert [str(o.source) for o in found] == ["2001:db8:5::/64"]
    mapped = sw.parse_proc_row(PROC6_MAPPED, "little")
    assert sw.offenders(tally([mapped] * 20, host=20))[0].source == ipaddress.ip_network("203.0.113.7/32")


def test_thresholds_are_inclusive_and_the_busiest_port_is_named():
    entries = [entry("198.51.100.7", 80)] * 3 + [entry("198.51.100.7", 443)] * 2 + [entry("198.51.100.7", 8443)]
    (o,) = sw.offenders(tally(entries, host=6))
    assert (o.count, o.port, o.more_ports) == (6, 80, 2)
    assert sw.offenders(tally(entries, host=7)) == []


def test_ports_option_counts_only_those_ports():
    entries = [entry("198.51.100.7", 80)] * 30 + [entry("198.51.100.8", 22)] * 30
    t = tally(entries, ports=sw.parse_ports("80,443"))
    assert t.total == 30 and [str(o.source) for o in sw.offenders(t)] == ["198.51.100.7/32"]


def test_protected_addresses_and_prefixes_holding_them_are_never_reported():
    entries = [entry(f"192.0.2.{i}") for i in range(2, 80)] + [entry("192.0.2.77")] * 30 + [entry("192.0.2.1")] * 40
    found = sw.offenders(tally(entries, host=20, net=50, protected=("192.0.2.1",)))
    # the /24 holds this machine's 192.0.2.1: only the other busy host is named
    assert [str(o.source) for o in found] == ["192.0.2.77/32"]
    loop = [entry("127.0.0.1")] * 100 + [entry("::1")] * 100
    assert sw.offenders(tally(loop)) == []


def test_a_spread_flood_gives_only_the_summary():
    rng = random.Random(7)
    entries = [sw.HalfOpen(4, rng.getrandbits(32), 443) for _ in range(3000)]
    t = tally(entries)
    found = sw.offenders(t)
    assert found == [] and sw.unattributed(t, found) == 3000
    assert sw.summary_line(t, found).startswith("half-open total: 3000 SYN_RECV held by no offender")
    small = tally(entries[:100])
    assert sw.summary_line(small, sw.offenders(small)) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), min_size=1, max_size=600),
       st.integers(4, 64))
def test_bounded_tally_never_overstates_and_keeps_heavy_sources(draws, capacity):
    """With few keys allowed, counts become estimates: never above the truth, so a
    threshold is never crossed by an innocent source; a truly heavy one is kept."""
    entries = [sw.HalfOpen(4, (198 << 24) | (51 << 16) | (n << 8) | h, 80) for n, h in draws]
    truth_net = Counter((e.address >> 8) for e in entries)
    truth_host = Counter(e.address for e in entries)
    t = sw.Tally(sw.Thresholds(host=1, net=1), capacity=capacity).feed(entries)
    assert len(t.hosts.counts) <= capacity and len(t.nets.counts) <= capacity
    for o in sw.offenders(t):
        truth = truth_host if o.addresses is None else truth_net
        key = int(o.source.network_address) >> (0 if o.addresses is None else 8)
        assert o.count <= truth[key]
    heavy = [k for k, n in truth_net.items() if n > len(entries) // (capacity // 2) + 1]
    found = {int(o.source.network_address) >> 8 for o in sw.offenders(t) if o.addresses is not None}
    assert set(heavy) <= found


def test_thresholds_and_ports_refuse_nonsense():
    for bad in (dict(host=0), dict(net=-1), dict(prefix4=7), dict(prefix6=129), dict(unattributed=0)):
        with pytest.raises(ValueError):
            sw.Thresholds(**bad)
    assert sw.parse_ports("all") is None and sw.parse_ports("80, 443") == {80, 443}
    assert sw.parse_ports("8000-8002") == {8000, 8001, 8002}
    for bad in ("0", "70000", "90-80", "http"):
        with pytest.raises(ValueError):
            sw.parse_ports(bad)


# --- the lines, through the shipped filter ----------------------------------------------

def test_offender_lines_are_what_filter_synrecv_bans(runner):
    run = runner({}, "synrecv")
    hosts_only = runner({"mode": "hosts"}, "synrecv")
    cases = [sw.Offender(ipaddress.ip_network("203.0.113.0/24"), 65, 80, 0, 65),
             sw.Offender(ipaddress.ip_network("2001:db8:5::/64"), 99, 443, 2, 1),
             sw.Offender(ipaddress.ip_network("198.51.100.7/32"), 24, 443, 0, None),
             sw.Offender(ipaddress.ip_network("2001:db8::7/128"), 24, 8080, 1, None)]
    for o in cases:
        line = "2026-11-21T10:00:05+09:00 f2b-ext-synwatch[812]: " + sw.offender_line(o)
        (m,) = run.match(line)
        want = str(o.source) if o.addresses is not None else str(o.source.network_address)
        assert (m.ip, m.groups["dpt"], m.groups["count"], m.groups["proto"]) == (want, str(o.port), str(o.count), "SYN_RECV")
        assert len(hosts_only.match(line)) == (o.addresses is None)
    t = tally([sw.HalfOpen(4, i * 7919, 80) for i in range(500)])
    summary = sw.summary_line(t, sw.offenders(t))
    assert summary and run.match("2026-11-21T10:00:05+09:00 f2b-ext-synwatch[812]: " + summary) == []


def test_shipped_samples_through_fail2ban_regex(confdir, tmp_path):
    from f2b_ext.system.samples import read_cases
    cases = [c for c in read_cases(ROOT / "tests" / "samples" / "synrecv") if not c.options]
    log = tmp_path / "synwatch.log"
    log.write_text("\n".join(c.line for c in cases) + "\n")
    out = subprocess.run(["fail2ban-regex", "-c", str(confdir), "--raw", "-o", "ip", str(log), "synrecv"],
                         capture_output=True, text=True, check=True).stdout
    assert sorted(out.split()) == sorted(c.expect["host"] for c in cases if c.should_match)


# --- the command line -------------------------------------------------------------------

def f2b_ext(*args):
    return subprocess.run([sys.executable, "-m", "f2b_ext", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


@pytest.mark.parametrize("args,message", [
    (["--net", "0"], "must be above 0"),
    (["--prefix4", "4"], "prefix4 must be"),
    (["--ports", "http"], "bad port"),
    (["--ignore", "not-a-network"], "does not appear to be"),
    (["--log", "/proc/nope/synwatch.log", "--once"], "cannot write the log"),
])
def test_bad_options_are_one_line_errors(args, message):
    r = f2b_ext("synwatch", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert "Traceback" not in r.stderr


def test_systemd_unit_is_valid_and_runs_the_command():
    unit = ROOT / "systemd" / "f2b-ext-synwatch.service"
    # a minimal system has no man-db: verify would fail on Documentation=man:... alone
    man = [] if shutil.which("man") else ["--man=no"]
    r = subprocess.run(["systemd-analyze", "verify", *man, str(unit)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = unit.read_text()
    assert "ExecStart=/usr/bin/python3 -m f2b_ext synwatch --log /var/log/f2b-ext/synwatch.log" in text
    assert "SyslogIdentifier=f2b-ext-synwatch" in text      # what the filter's journal rendering expects


# --- both readers on the real kernel ------------------------------------------------------

@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")
def test_both_readers_see_exactly_what_ss_sees():
    from f2b_ext.lab.netns import Lab, in_netns, until
    from f2b_ext.system.synwatch import NetlinkReader, ProcReader
    with Lab() as lab:
        lab.mute_forged_sources()
        web = lab.serve(80, 256)
        sources = [f"203.0.113.{i}" for i in range(1, 101)] + [f"2001:db8:5::{i:x}" for i in range(1, 51)]
        lab.syn_flood(sources, 80)
        # the kernel may take the frames in after send() returns (softirq, on a loaded
        # machine in ksoftirqd): wait until every SYN has its entry
        until(lambda: lab.server_sh("ss", "-Htn", "state", "syn-recv").count("\n") >= len(sources), 15)
        ss = lab.server_sh("ss", "-Htn", "state", "syn-recv")
        seen = Counter()
        for row in ss.splitlines():
            peer = row.split()[-1].rsplit(":", 1)[0].strip("[]")
            addr = ipaddress.ip_address(peer)
            seen[str(getattr(addr, "ipv4_mapped", None) or addr)] += 1
        assert sum(seen.values()) == 150 and seen == Counter(sources)
        for reader in (NetlinkReader(), ProcReader()):
            t = sw.Tally(sw.Thresholds(host=1, net=1))
            with in_netns(lab.server):
                reader.sample(t)
            address = {4: ipaddress.IPv4Address, 6: ipaddress.IPv6Address}
            got = Counter({str(address[v](a)): n for (v, a), n in t.hosts.counts.items()})
            assert got == seen, reader.name
        web.close()


@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")
def test_once_prints_the_offenders_of_a_real_flood():
    from f2b_ext.lab.netns import Lab, until
    with Lab() as lab:
        lab.mute_forged_sources()
        web = lab.serve(443, 64)
        lab.syn_flood([f"198.51.100.{i}" for i in range(1, 120)], 443)
        # until the kernel took them in (the listen queue holds 65)
        until(lambda: lab.server_sh("ss", "-Htn", "state", "syn-recv").count("\n") >= 65, 15)
        for reader in ("netlink", "proc"):
            r = subprocess.run(["ip", "netns", "exec", lab.server, sys.executable, "-m", "f2b_ext", "synwatch",
                                "--once", "--reader", reader], capture_output=True, text=True, cwd=ROOT, timeout=60)
            assert r.returncode == 0, r.stderr
            assert r.stdout == "half-open flood from 198.51.100.0/24: 65 SYN_RECV to port 443 from 65 addresses\n"
        web.close()

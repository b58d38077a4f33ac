"""`f2b-ext report`: the streaming tables (pure), a hand-made log whose answers are
written down here by hand, hostile input, the command's errors and progress bar, and a
log the real kernel wrote in the live lab for traffic sent on purpose."""
from __future__ import annotations

import gzip
import json
import os
import pty
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings, strategies as st

from conftest import ROOT, SAMPLES, cli_as, is_root
from f2b_ext.core import netfilter as nf
from f2b_ext.core import report

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc).timestamp()
MAC = "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
IP = "LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 DF"


def stamp(minute: int, second: int = 0) -> str:
    return f"2026-11-21T08:{minute:02d}:{second:02d}.000000+00:00 host kernel: [  444.910152] "


def syn_in(m, prefix, src, dpt):
    return (stamp(m) + f"{prefix}IN=eth0 OUT= {MAC}SRC={src} DST=192.0.2.1 {IP} PROTO=TCP SPT=40000 DPT={dpt} "
            "WINDOW=1024 RES=0x00 SYN URGP=0")


def synack_in(m, src, spt):
    return (stamp(m) + f"FINAL_REJECT: IN=eth0 OUT= {MAC}SRC={src} DST=192.0.2.1 {IP} PROTO=TCP SPT={spt} DPT=3594 "
            "WINDOW=29200 RES=0x00 ACK SYN URGP=0")


def out(m, dst, dpt, flags="SYN"):
    return (stamp(m) + f"UNKNOWN_OUTGOING: IN= OUT=eth0 SRC=192.0.2.1 DST={dst} {IP} PROTO=TCP SPT=50000 "
            f"DPT={dpt} WINDOW=0 RES=0x00 {flags} URGP=0")


def gre_in(m, src):
    return stamp(m) + f"IN=eth0 OUT= {MAC}SRC={src} DST=192.0.2.1 LEN=52 TOS=0x00 PREC=0x00 TTL=52 ID=0 DF PROTO=47"


def known_log() -> list[str]:
    lines = [syn_in(0, "FINAL_REJECT: ", f"203.0.113.{h}", p) for h in range(10, 16) for p in (22, 23, 25)]
    lines += [syn_in(1, "[UFW BLOCK] ", "198.51.100.7", 23) for _ in range(5)]
    lines += [synack_in(2, "198.51.100.80", 80) for _ in range(4)]
    lines += [out(2, "198.51.100.80", 80, "RST") for _ in range(4)]        # our kernel's answer (seed 001)
    lines += [out(3, "203.0.113.66", 4444) for _ in range(2)]
    lines += [gre_in(4, "203.0.113.200") for _ in range(3)]
    lines += ["2026-11-21T08:04:10+00:00 host sshd[811]: Accepted publickey for admin"] * 7
    lines += ["\x00\xff garbage SRC=203.0.113.99 DST=x", "host kernel: IN=eth0 OUT= SRC=203.0.113.98 " + "A" * 10000]
    return lines


# What an admin counting by hand finds in known_log():
KNOWN = {
    "lines": 45, "records": 36, "other_lines": 9, "before_since": 0,
    "first": "2026-11-21T08:00:00+00:00", "last": "2026-11-21T08:04:00+00:00",
    "kinds": {"attempt": 28, "backscatter": 4, "own reply": 4},
    "prefixes": [{"prefix": "FINAL_REJECT", "direction": "in", "records": 22},
                 {"prefix": "UNKNOWN_OUTGOING", "direction": "out", "records": 6},
                 {"prefix": "[UFW BLOCK]", "direction": "in", "records": 5},
                 {"prefix": "", "direction": "in", "records": 3}],
    "protocols": {"TCP": 33, "47 (GRE)": 3},
    "hosts": 5,
    "top_sources": [{"address": "198.51.100.7", "attempts": 5, "dependency": None},
                    *[{"address": f"203.0.113.{h}", "attempts": 3, "dependency": None} for h in range(10, 16)],
                    {"address": "203.0.113.200", "attempts": 3, "dependency": None}],
    "framing": [],
    "top_ports": [{"port": 23, "protocol": "TCP", "attempts": 11}, {"port": 22, "protocol": "TCP", "attempts": 6},
                  {"port": 25, "protocol": "TCP", "attempts": 6}, {"port": None, "protocol": "47 (GRE)", "attempts": 3}],
    "outbound": [{"address": "203.0.113.66", "port": 4444, "protocol": "TCP", "attempts": 2}],
    "backscatter": {"records": 4, "victims": [{"address": "198.51.100.80", "records": 4,
                                               "answered_from": {"80/TCP": 4}}]},
    "candidate_subnets": [{"subnet": "203.0.113.0/24", "hosts": 7, "attempts": 21,
                           "refused": "overlaps bogon 203.0.113.0/24"}],
    "per_minute": [{"minute": f"2026-11-21T08:0{m}:00+00:00", "records": r, "attempts": a}
                   for m, r, a in ((0, 18, 18), (1, 5, 5), (2, 8, 0), (3, 2, 2), (4, 3, 3))],
    "approximate": False, "max_overcount": 0,
}


def f2b_ext(*args, **kw):
    """The command; a report judges the test's log alone, never with this machine's own
    dependencies (its live connections would change the answers)."""
    if args and args[0] == "report":
        args = (*args, "--no-dependencies")
    return subprocess.run([sys.executable, "-m", "f2b_ext", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, **kw)


# --- pure -----------------------------------------------------------------------------

def test_the_known_log_gives_the_known_answers():
    rep = report.Report(now=NOW)
    for line in known_log():
        rep.feed(line)
    assert rep.summary(top=10) == KNOWN


def test_lines_claiming_a_dependency_are_marked_as_framing():
    """198.51.100.7 is this server's resolver here: its five attempts are framing, marked
    in the top sources and counted apart; the /24 the others fill is refused with the
    jail's own bogons (none) because it covers 203.0.113.200, a peer."""
    rep = report.Report(now=NOW, dependencies={"198.51.100.7": "resolver", "203.0.113.200": "peer"}, bogons=(),
                        hosts=7)
    for line in known_log():
        rep.feed(line)
    s = rep.summary(top=10)
    assert s["top_sources"][0] == {"address": "198.51.100.7", "attempts": 5, "dependency": "resolver"}
    assert s["framing"] == [{"address": "198.51.100.7", "dependency": "resolver", "records": 5},
                            {"address": "203.0.113.200", "dependency": "peer", "records": 3}]
    assert s["candidate_subnets"] == [{"subnet": "203.0.113.0/24", "hosts": 7, "attempts": 21,
                                       "refused": "covers protected 203.0.113.200/32"}]
    text = "\n".join(report.render(s, "test"))
    assert "198.51.100.7" in text and "(forged from your resolver?)" in text
    assert "Candidate subnets (7+ attacking hosts" in text and "Framing: " in text


def test_since_skips_older_records():
    rep = report.Report(now=NOW, since=datetime(2026, 11, 21, 8, 2, tzinfo=timezone.utc).timestamp())
    for line in known_log():
        rep.feed(line)
    s = rep.summary()
    assert s["before_since"] == 23 and s["records"] == 13 and s["first"] == "2026-11-21T08:02:00+00:00"


@settings(max_examples=300, deadline=None)
@given(stream=st.lists(st.integers(0, 40), max_size=400), capacity=st.integers(2, 16))
def test_bounded_counts_are_exact_or_high_by_at_most_the_error(stream, capacity):
    counter = report.Bounded(capacity)
    for key in stream:
        counter.add(key)
    truth = Counter(stream)
    assert len(counter.counts) <= capacity
    for key, n in counter.counts.items():
        assert truth[key] <= n <= truth[key] + counter.error
    assert all(key in counter.counts for key, n in truth.items() if n > counter.error)
    if len(truth) <= capacity:
        assert counter.counts == dict(truth) and counter.error == 0


@pytest.mark.parametrize("text, want", [
    ("Nov 21 08:08:21", datetime(2026, 11, 21, 8, 8, 21, tzinfo=timezone.utc)),
    ("Dec 31 23:59:59", datetime(2025, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),   # last year's
    ("Nov 22 08:00:00", datetime(2026, 11, 22, 8, 0, tzinfo=timezone.utc)),          # clock skew
    ("2026-11-21T08:08:21.452534+00:00", datetime(2026, 11, 21, 8, 8, 21, 452534, tzinfo=timezone.utc)),
    ("2026-11-21T17:08:21+09:00", datetime(2026, 11, 21, 8, 8, 21, tzinfo=timezone.utc)),
    ("2026-11-21T08:08:21.452534+0000", datetime(2026, 11, 21, 8, 8, 21, 452534, tzinfo=timezone.utc)),
])
def test_stamps(text, want):
    assert report.StampReader(NOW, timezone.utc)(text) == want.timestamp()


@pytest.mark.parametrize("text", ["", "Foo 21 08:08:21", "2026-13-40T99:00:00"])
def test_unreadable_stamps_are_none(text):
    assert report.StampReader(NOW, timezone.utc)(text) is None


def test_parse_since():
    assert report.parse_since("30m", NOW) == NOW - 1800
    assert report.parse_since("1w", NOW) == NOW - 604800
    assert report.parse_since("2026-11-21T08:00+00:00", NOW) == NOW - 3600
    with pytest.raises(ValueError, match="--since"):
        report.parse_since("yesterday", NOW)


@pytest.mark.parametrize("line, kind", [
    (syn_in(0, "", "203.0.113.1", 23), nf.ATTEMPT),
    (synack_in(0, "203.0.113.1", 80), nf.BACKSCATTER),
    (out(0, "203.0.113.1", 80, "RST"), nf.OWN_REPLY),
    (gre_in(0, "203.0.113.1"), nf.ATTEMPT),
    (stamp(0) + f"IN=eth0 OUT= {MAC}SRC=203.0.113.1 DST=192.0.2.1 LEN=28 TOS=0x00 PREC=0x00 TTL=51 ID=5 "
     "PROTO=ICMP TYPE=0 CODE=0 ID=1 SEQ=1", nf.ICMP_ANSWER),
    (stamp(0) + f"IN=eth0 OUT= {MAC}SRC=203.0.113.1 DST=192.0.2.1 LEN=28 TOS=0x00 PREC=0x00 TTL=51 ID=5 "
     "PROTO=UDP SPT=53 DPT=4000 LEN=8", nf.REPLY_PORT),
    (stamp(0) + f"IN=eth0 OUT= {MAC}SRC=203.0.113.1 DST=224.0.0.1 LEN=28 TOS=0x00 PREC=0x00 TTL=51 ID=5 "
     "PROTO=UDP SPT=4000 DPT=4000 LEN=8", nf.TO_MANY),
    (stamp(0) + f"IN=eth0 OUT= {MAC}SRC=fe80:0000:0000:0000:0000:0000:0000:0001 "
     "DST=ff02:0000:0000:0000:0000:0000:0000:0001 LEN=72 TC=0 HOPLIMIT=255 FLOWLBL=0 PROTO=ICMPv6 TYPE=135 CODE=0",
     nf.TO_MANY),
    (stamp(0) + "sshd[1]: hello", nf.NOT_NETFILTER),
])
def test_verdict_kinds(line, kind):
    assert nf.judge_line(line, nf.Policy(direction="any")).kind == kind


def test_neighbour_discovery_is_housekeeping_not_backscatter():
    line = (stamp(0) + f"IN=eth0 OUT= {MAC}SRC=fe80:0000:0000:0000:0000:0000:0000:0001 "
            "DST=fe80:0000:0000:0000:0000:0000:0000:0002 LEN=72 TC=0 HOPLIMIT=255 FLOWLBL=0 PROTO=ICMPv6 TYPE=136 CODE=0")
    verdict = nf.judge_line(line)
    assert verdict.kind == nf.OTHER and not verdict.attempt


# --- the command ------------------------------------------------------------------------

@pytest.fixture
def known_file(tmp_path):
    path = tmp_path / "netfilter.log"
    path.write_text("\n".join(known_log()) + "\n")
    return path


def test_report_json_on_a_file_and_its_gzip(known_file, tmp_path):
    r = f2b_ext("report", str(known_file), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got.pop("source") == str(known_file)
    assert got == KNOWN
    gz = tmp_path / "netfilter.log.1.gz"
    gz.write_bytes(gzip.compress(known_file.read_bytes()))
    assert json.loads(f2b_ext("report", str(gz), "--json").stdout)["records"] == 36


def test_report_text_reads_well_in_a_pipe(known_file):
    r = f2b_ext("report", str(known_file))
    assert r.returncode == 0 and r.stderr == ""
    text = r.stdout
    assert "\033[" not in text and "█" not in text
    assert "45 lines: 36 netfilter records, 9 other" in text
    assert "  203.0.113.0/24               7 hosts         21 attempts  (not escalated: overlaps bogon" in text
    assert "  198.51.100.80                                     4  from 80/TCP" in text
    assert "  203.0.113.66                             4444/TCP                2" in text
    chart = text.split("Activity per minute")[1].splitlines()[1:]
    assert [row.split()[1] for row in chart] == ["08:00", "08:01", "08:02", "08:03", "08:04"]
    assert chart[2].split()[2].strip(".") == ""              # minute 2: backscatter only, no attempts
    assert chart[0].split()[-1] == "18"


@pytest.mark.fail2ban                     # fail2ban reads the filter spec, as a jail's
def test_report_reads_the_jails_filter_parameters(known_file):
    """A jail with neverprotos=2|47 never counts GRE: nor does a report with its filter."""
    r = f2b_ext("report", str(known_file), "--json", "--filter", "netfilter[neverprotos=2|47]")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["kinds"]["attempt"] == KNOWN["kinds"]["attempt"] - 3 and got["kinds"]["other"] == 3
    assert "203.0.113.200" not in {s["address"] for s in got["top_sources"]}
    for spec, says in (("netfilter[icmptypes=8,13]", "icmptypes"), ("synrecv", "unknown filter 'synrecv' (report reads: netfilter)")):
        r = f2b_ext("report", str(known_file), "--filter", spec)
        assert r.returncode == 2 and says in r.stderr and r.stderr.count("\n") == 1, r.stderr


def jail_confdir(tmp_path) -> Path:
    """A fail2ban configuration directory in tmp_path (never /etc/fail2ban itself): the
    stock one, the suite's files, a disabled jail `probe` whose filter line says
    mode=aggressive, and a netfilter.local that never counts GRE (47)."""
    import shutil
    from f2b_ext.system.filter_runner import config_dir
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf)
    for stock in (conf / "jail.d").glob("*"):
        stock.unlink()
    config_dir(conf)
    (conf / "jail.local").write_text("[probe]\nenabled = false\nfilter = netfilter[mode=aggressive]\n"
                                     "logpath = /dev/null\n")
    (conf / "filter.d" / "netfilter.local").write_text("[Init]\nneverprotos = 2|47\n")
    return conf


@pytest.mark.fail2ban
def test_the_core_reads_every_parameter_of_the_filter():
    """POLICY_OPTIONS (what --jail hands the core) is the shipped filter's whole [Init]
    as fail2ban reads it, its internal __names aside."""
    from f2b_ext.system.filter_runner import stock_init_options
    assert set(nf.POLICY_OPTIONS) == {k for k in stock_init_options("netfilter") if not k.startswith("_")}


@pytest.mark.fail2ban                     # fail2ban's own reader reads the jail
def test_report_judges_lines_as_a_named_jail_of_a_configuration_does(known_file, tmp_path):
    """--jail NAME --conf DIR: the jail's filter options as fail2ban resolves them (its
    filter line over the filter's .local), the same as giving them with --filter."""
    conf = jail_confdir(tmp_path)
    r = f2b_ext("report", str(known_file), "--json", "--jail", "probe", "--conf", str(conf))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    # aggressive: the 4 SYN-ACKs count; neverprotos 2|47 (the .local): the 3 GRE records do not
    assert got["kinds"]["attempt"] == KNOWN["kinds"]["attempt"] + 4 - 3 and got["kinds"]["other"] == 3
    spelled = f2b_ext("report", str(known_file), "--json", "--filter", "netfilter[mode=aggressive, neverprotos=2|47]")
    assert got == json.loads(spelled.stdout)
    for args, says in ((("--jail", "nope"), f"no jail 'nope' in {conf}"),
                       (("--jail", "sshd"), "jail 'sshd' uses filter 'sshd' (report reads: netfilter)"),
                       (("--jail", "probe", "--filter", "netfilter[mode=aggressive]"), "give --filter or --jail, not both")):
        r = f2b_ext("report", str(known_file), *args, "--config", str(conf))
        assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    r = f2b_ext("report", str(known_file), "--jail", "probe", "--conf", str(tmp_path / "none"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "jail.conf not found" in r.stderr, r.stderr


@pytest.mark.parametrize("args, message", [
    (("/nonexistent/netfilter.log",), "/nonexistent/netfilter.log: no such file"),
    (("/tmp",), "/tmp: is a directory"),
    ((), "give one LOGFILE or --journal"),
    (("x", "--journal"), "give one LOGFILE or --journal"),
    (("/dev/null", "--since", "yesterday"), "--since 'yesterday'"),
])
def test_report_errors_are_one_line(args, message):
    r = f2b_ext("report", *args)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert message in r.stderr


@pytest.mark.skipif(not is_root(), reason="needs root to run as another user")
def test_report_on_an_unreadable_file_says_permission_denied(known_file):
    import tempfile
    with tempfile.TemporaryDirectory() as shared:
        os.chmod(shared, 0o755)                       # nobody may look inside, not read the log
        log = os.path.join(shared, "netfilter.log")
        with open(log, "w") as fh:
            fh.write(known_file.read_text())
        os.chmod(log, 0o600)
        for target in (log, os.path.join(known_file.parent, "netfilter.log")):   # and a dir nobody may enter
            r = cli_as("nobody", "report", target)
            assert r.returncode == 2 and r.stderr == f"f2b-ext: {target}: permission denied\n"


def test_progress_bar_only_on_a_terminal(tmp_path):
    big = tmp_path / "big.log"
    big.write_text("\n".join(known_log()[:40] * 500) + "\n")          # 20,000 lines
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "f2b_ext", "report", str(big), "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=follower, text=True)
    os.close(follower)
    stdout, _ = proc.communicate(timeout=120)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.returncode == 0 and json.loads(stdout)["records"] == 18000
    assert b"\r[" in seen and b"lines" in seen                      # drawn on the terminal
    assert "\r" not in stdout                                        # never in the output
    piped = f2b_ext("report", str(big), "--json")
    assert piped.stderr == ""                                        # nothing when stderr is a pipe


def test_report_on_the_captured_samples_is_consistent():
    """Every line of the real-kernel captures is counted exactly once."""
    s = json.loads(f2b_ext("report", str(SAMPLES / "netfilter-captured"), "--json").stdout)
    assert s["records"] + s["other_lines"] == s["lines"]
    assert sum(s["kinds"].values()) == s["records"] == sum(p["records"] for p in s["prefixes"])
    assert sum(s["protocols"].values()) == s["records"]


@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")
def test_report_on_what_the_kernel_logged_in_the_live_lab():
    """Traffic sent on purpose, logged by the seeds' firewall through rsyslog: the
    report's answers are what was sent."""
    from f2b_ext.lab.netns import until
    from f2b_ext.lab.live import LiveLab, LiveSettings
    hosts = [f"203.0.113.{h}" for h in range(20, 26)]
    with LiveLab(LiveSettings(fail2ban=False)) as live:
        for h in hosts:
            live.syn_scan(h)                                  # 4 ports each
        live.backscatter("198.51.100.80", sport=80)
        live.gre("198.51.100.9", count=3)
        live.call_home("203.0.113.66", 4444)
        log = live.rsyslog.netfilter_log
        # every line sent (the server's RST to the backscatter victim and its call home come
        # last), not a count that the lines but one already reach
        expected = {**{f"SRC={h} ": 4 for h in hosts}, "SRC=198.51.100.80 ": 1, "DST=198.51.100.80 ": 1,
                    "SRC=198.51.100.9 ": 3, "DST=203.0.113.66 ": 1}
        assert until(lambda: all(len(live.log_lines(k)) >= n for k, n in expected.items()), 15), \
            {k: len(live.log_lines(k)) for k in expected}
        r = f2b_ext("report", str(log), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert {x["address"]: x["attempts"] for x in s["top_sources"]} == {**{h: 4 for h in hosts}, "198.51.100.9": 3}
    assert [(c["subnet"], c["hosts"], c["attempts"]) for c in s["candidate_subnets"]] == [("203.0.113.0/24", 6, 24)]
    assert s["backscatter"]["victims"][0] == {"address": "198.51.100.80", "records": 1, "answered_from": {"80/TCP": 1}}
    assert {(o["address"], o["port"]) for o in s["outbound"]} == {("203.0.113.66", 4444)}
    assert s["protocols"]["47 (GRE)"] == 3
    assert {p: s["top_ports"] and next((x["attempts"] for x in s["top_ports"] if x["port"] == p), 0)
            for p in (23, 25, 80, 3389)} == {p: 6 for p in (23, 25, 80, 3389)}


def test_report_marks_a_line_claiming_this_machines_gateway(tmp_path):
    """Without --no-dependencies the report reads this machine's dependencies: a scan
    "from" its gateway is listed as framing."""
    from f2b_ext.system.host import gather
    gateway = next((str(d.net.network_address) for d in gather().found
                    if d.source == "gateway" and d.net.version == 4), None)
    if gateway is None:
        pytest.skip("this machine has no IPv4 gateway")
    log = tmp_path / "netfilter.log"
    log.write_text("".join(
        f"2026-11-21T08:00:0{p}+00:00 fw kernel: [ 1.0] FINAL_REJECT: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
        f"SRC={gateway} DST=198.51.100.1 LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 DF PROTO=TCP SPT=40000 DPT=2{p} "
        "WINDOW=1024 RES=0x00 SYN URGP=0\n" for p in range(3)))
    r = subprocess.run([sys.executable, "-m", "f2b_ext", "report", str(log), "--json"], capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["framing"] == [{"address": gateway, "dependency": "gateway", "records": 3}]
    assert s["top_sources"] == [{"address": gateway, "attempts": 3, "dependency": "gateway"}]

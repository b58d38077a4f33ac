"""The f2b-ext command, run as a user runs it (a subprocess)."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, SAMPLES


def f2b_ext(*args, **kw):
    return subprocess.run([sys.executable, "-m", "f2b_ext", *args], capture_output=True,
                          text=True, cwd=ROOT, **kw)


def test_test_passes_on_the_shipped_samples():
    r = f2b_ext("test", "-q")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert r.stdout.strip().endswith("0 failed")
    assert "\033[" not in r.stdout            # a pipe gets no colour


def test_test_prints_verdict_and_reason_per_line():
    r = f2b_ext("test", str(SAMPLES / "netfilter"))
    assert r.returncode == 0
    assert "BAN 89.248.166.153  attempt: TCP SYN" in r.stdout
    assert "ignored: backscatter: TCP ACK RST" in r.stdout
    assert "ignored: reply port: UDP from port 53" in r.stdout
    assert "ignored: multicast destination" in r.stdout


def test_test_runs_the_ipfw_and_synrecv_samples():
    for name, banned in (("ipfw", "BAN 2001:db8::7  attempt: failregex #1"),
                         ("synrecv", "BAN 203.0.113.0/24  attempt: failregex #1")):
        r = f2b_ext("test", "--filter", name)
        assert r.returncode == 0 and r.stdout.strip().endswith(" 0 failed"), r.stdout[-2000:] + r.stderr
        assert banned in r.stdout and "ignored: no failregex matched" in r.stdout
    wrong = f2b_ext("test", "--filter", "ipfw", str(SAMPLES / "netfilter"))
    assert wrong.returncode == 1                 # netfilter's samples through ipfw: expectations fail
    r = f2b_ext("test", "--filter", "pf")
    assert r.returncode == 2 and r.stderr.strip() == ("f2b-ext: unknown filter 'pf' "
                                                      "(this suite ships: netfilter, ipfw, synrecv)")


def test_test_fails_on_a_wrong_expectation(tmp_path):
    good = (SAMPLES / "netfilter").read_text()
    bad = tmp_path / "wrong"
    bad.write_text(good.replace('"host": "89.248.166.153"', '"host": "89.248.166.154"', 1))
    r = f2b_ext("test", str(bad))
    assert r.returncode == 1
    assert "FAIL wrong:" in r.stdout and r.stdout.strip().endswith("1 failed")


def test_test_on_a_users_own_log(tmp_path):
    """A plain log (no failJSON): verdicts and totals; nothing to fail."""
    log = tmp_path / "kern.log"
    log.write_text("".join(l for l in (SAMPLES / "netfilter").read_text().splitlines(True)
                           if not l.startswith("#")))
    r = f2b_ext("test", str(log), "--filter", "netfilter[direction=out, logprefix=UNKNOWN_OUTGOING]")
    assert r.returncode == 0, r.stdout[-1000:]
    assert "BAN 203.0.113.30  attempt: new outbound TCP connection" in r.stdout
    assert "ignored: this host's own TCP reply (RST)" in r.stdout
    assert "BAN 89.248.166.153" not in r.stdout           # inbound, not this jail's business


def test_errors_are_one_line_and_exit_2(tmp_path):
    for args in (["test", str(tmp_path / "missing.log")],
                 ["test", str(SAMPLES / "netfilter"), "--filter", "netfilter[direction=up]"],
                 ["test", str(SAMPLES / "netfilter"), "--filter", "netfilter[oops"],
                 ["test", str(SAMPLES / "netfilter"), "--filter", "sshd"]):
        r = f2b_ext(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("f2b-ext: ") and r.stderr.count("\n") == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_report_and_test_say_the_same_line_for_the_same_bad_argument(tmp_path):
    """A log file or a --filter SPEC that cannot be used: one line, exit 2, the same
    words from both commands that take them (cli/common.py)."""
    for logfile, filter_spec, says in ((str(tmp_path / "missing.log"), "netfilter", "missing.log: no such file"),
                                       (str(tmp_path), "netfilter", f"{tmp_path}: is a directory"),
                                       ("/dev/null", "netfilter[icmptypes=x]", "filter netfilter[icmptypes=x]: "
                                                                                  "icmptypes must be ICMP types")):
        said = set()
        for command in ("report", "test"):
            r = f2b_ext(command, logfile, "--filter", filter_spec)
            assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, (command, r.stderr)
            said.add(r.stderr)
        assert len(said) == 1, said


def test_commands_that_read_fail2bans_configuration_take_conf_or_config(tmp_path):
    """check and schedule (and report --jail) name fail2ban's directory the same way:
    --conf or --config, default /etc/fail2ban."""
    from f2b_ext.cli import build_parser
    for command in ("check", "schedule"):
        assert build_parser().parse_args([command]).conf == "/etc/fail2ban"
        for spelling in ("--conf", "--config"):
            assert build_parser().parse_args([command, spelling, str(tmp_path)]).conf == str(tmp_path)


def test_bad_json_in_a_sample_is_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("# failJSON: {not json}\nNov 21 08:08:21 host kernel: x\n")
    r = f2b_ext("test", str(bad))
    assert r.returncode == 2 and "bad JSON" in r.stderr and r.stderr.count("\n") == 1


def test_help_on_every_subcommand_and_version():
    from f2b_ext import __version__
    from f2b_ext.cli import build_parser
    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert {"install", "uninstall", "check", "test", "report", "schedule", "synwatch", "demo"} <= set(commands)
    for command in commands:
        r = f2b_ext(command, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: f2b-ext {command} "), (command, r.stderr)
        assert "\033[" not in r.stdout
    r = f2b_ext("--version")
    assert (r.returncode, r.stdout) == (0, f"f2b-ext {__version__}\n")

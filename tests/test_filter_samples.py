"""Every sample line through the real fail2ban filter machinery (as fail2ban's own
samplestestcase does), through fail2ban-regex, and through the pure core: all three
must give the expected verdict and address."""
from __future__ import annotations

import ipaddress
import subprocess

import pytest

from conftest import SAMPLES, assert_sample
from f2b_ext.core import netfilter as nf
from f2b_ext.core.evidence import Evidence, classify
from f2b_ext.system.samples import read_cases

SAMPLE_FILES = sorted(p for p in SAMPLES.iterdir() if p.name.startswith("netfilter"))
CASES = [c for p in SAMPLE_FILES for c in read_cases(p)]


def filter_options(case) -> dict:
    return {k: v for k, v in case.options.items() if k in nf.POLICY_OPTIONS}


def is_journal(case) -> bool:
    return case.options.get("logtype") == "journal"


def case_id(case):
    return f"{case.path.rsplit('/', 1)[-1]}:{case.lineno}"


def test_samples_exist_for_every_rule():
    assert len(CASES) > 500
    assert sum(c.should_match for c in CASES) > 100
    assert sum(not c.should_match for c in CASES) > 100


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_sample_through_fail2ban(case, runner, upstream_clock):
    run = runner(filter_options(case))
    assert_sample(case, run.match(case.line, journal_time=upstream_clock if is_journal(case) else None))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_core_agrees_with_sample(case):
    """The pure core (used by `f2b-ext test`, `report`) gives the same verdict."""
    policy = nf.Policy.from_filter_options(filter_options(case))
    verdict = nf.judge_line(case.line, policy)
    assert verdict.attempt == case.should_match, verdict.reason
    if case.should_match:
        assert verdict.remote == ipaddress.ip_address(case.expect["host"])


def test_every_failregex_has_samples(runner, upstream_clock):
    """fail2ban's own rule: a regex without a matching sample is untested."""
    used = set()        # as fail2ban does: a regex counts as used under any options
    for case in CASES:
        if not case.should_match:
            continue
        run = runner(filter_options(case))
        for m in run.match(case.line, journal_time=upstream_clock if is_journal(case) else None):
            used.add(run.failregexes[m.regex_index])
    for opts in ({}, {"direction": "out"}, {"direction": "any"}, {"mode": "aggressive"}, {"protocols": "47"}):
        missing = [i for i, r in enumerate(runner(opts).failregexes) if r not in used]
        assert not missing, f"{opts}: failregex #{missing} has no sample"


def test_no_greedy_catch_all_before_host(runner):
    """fail2ban's samplestestcase rejects `.*` before <HOST> not anchored at the end."""
    from fail2ban.tests.samplestestcase import RE_WRONG_GREED
    for opts in ({}, {"direction": "out"}, {"direction": "any"}, {"mode": "aggressive"}):
        for regex in runner(opts).failregexes:
            assert not RE_WRONG_GREED.search(regex), regex


@pytest.mark.parametrize("options,section", [
    ("netfilter", "direction=in (default)"),
    ("netfilter[direction=out]", "direction=out"),
])
def test_fail2ban_regex_on_shipped_samples(confdir, tmp_path, options, section):
    """The command admins use: fail2ban-regex must find exactly the expected hosts."""
    cases = [c for c in read_cases(SAMPLES / "netfilter-captured")
             if c.options == ({} if section.startswith("direction=in") else {"direction": "out"})]
    assert cases
    log = tmp_path / "sample.log"
    log.write_text("\n".join(c.line for c in cases) + "\n")
    out = subprocess.run(["fail2ban-regex", "-c", str(confdir), "--raw", "-o", "ip", str(log), options],
                         capture_output=True, text=True, check=True).stdout
    got = sorted(str(ipaddress.ip_address(ip)) for ip in out.split())
    want = sorted(str(ipaddress.ip_address(c.expect["host"])) for c in cases if c.should_match)
    assert got == want


def test_no_possessive_quantifier_on_a_group(runner):
    """`(?:..)*+` gives wrong answers before CPython 3.11.5 (gh-106052; Debian 12 ships
    3.11.2): the filters use possessive runs of single characters and atomic groups only."""
    import re
    group_possessive = re.compile(r"(?<!\\)\)(?:[*+?]|\{[0-9,]*\})\+")
    assert group_possessive.search(r"(?:ab)*+c") and group_possessive.search(r"(?:ab){0,3}+")
    assert not group_possessive.search(r"[ab]*+(?>(?:ab)*)\)++")
    for opts in ({}, {"direction": "out"}, {"direction": "any"}, {"mode": "aggressive"}):
        for regex in runner(opts).failregexes:
            assert not group_possessive.search(regex), group_possessive.search(regex).group()


@pytest.mark.parametrize("case", [c for c in CASES if c.should_match], ids=case_id)
def test_captures_classify_as_kernel_evidence(case, runner, upstream_clock):
    """What an action makes of a match's captures (F-PROTO, F-DIR): a remote the host sent
    to is outbound evidence, any other is forgeable, never proven (no handshake behind a
    logged packet). Inbound matches capture no dir: a protocol alone must say forgeable."""
    run = runner(filter_options(case))
    found = run.match(case.line, journal_time=upstream_clock if is_journal(case) else None)
    kind = classify(found[0].groups.get("proto"), found[0].groups.get("dir"))
    record = nf.judge_line(case.line, nf.Policy.from_filter_options(filter_options(case))).record
    sent_by_this_host = record.direction == "out"
    assert kind == (Evidence.OUTBOUND if sent_by_this_host else Evidence.FORGEABLE), found[0].groups

"""filter.d/ipfw.conf (FreeBSD) and filter.d/synrecv.conf (f2b-ext synwatch): every
sample line through the real fail2ban filter machinery and through fail2ban-regex, as
fail2ban's own samplestestcase would check them if the filters were sent upstream."""
from __future__ import annotations

import ipaddress
import subprocess

import pytest

from conftest import SAMPLES, assert_sample
from f2b_ext.system.samples import read_cases

FILTERS = ("ipfw", "synrecv")
CASES = [(name, c) for name in FILTERS for c in read_cases(SAMPLES / name)]
# the option sets each filter's regexes are built with (fail2ban's sample test runs them all)
OPTION_SETS = {"ipfw": ({}, {"direction": "out"}, {"mode": "aggressive"}),
               "synrecv": ({}, {"mode": "hosts"})}


def case_id(item):
    name, case = item
    return f"{name}:{case.lineno}"


def test_samples_cover_matches_and_non_matches():
    for name in FILTERS:
        cases = [c for n, c in CASES if n == name]
        assert sum(c.should_match for c in cases) >= 8 and sum(not c.should_match for c in cases) >= 6, name


@pytest.mark.parametrize("item", CASES, ids=case_id)
def test_sample_through_fail2ban(item, runner, upstream_clock):
    name, case = item
    assert_sample(case, runner(case.options, name).match(case.line))


def test_every_failregex_has_samples(runner):
    for name, option_sets in OPTION_SETS.items():
        used = set()
        for n, case in CASES:
            if n == name and case.should_match:
                run = runner(case.options, name)
                used.update(run.failregexes[m.regex_index] for m in run.match(case.line))
        for opts in option_sets:
            missing = [i for i, r in enumerate(runner(opts, name).failregexes) if r not in used]
            assert not missing, f"{name} {opts}: failregex #{missing} has no sample"


def test_no_greedy_catch_all_before_host(runner):
    from fail2ban.tests.samplestestcase import RE_WRONG_GREED
    for name, option_sets in OPTION_SETS.items():
        for opts in option_sets:
            for regex in runner(opts, name).failregexes:
                assert not RE_WRONG_GREED.search(regex), (name, regex)


@pytest.mark.parametrize("name", FILTERS)
def test_fail2ban_regex_finds_exactly_the_expected_hosts(name, confdir, tmp_path):
    cases = [c for n, c in CASES if n == name and not c.options]
    log = tmp_path / f"{name}.log"
    log.write_text("\n".join(c.line for c in cases) + "\n")
    out = subprocess.run(["fail2ban-regex", "-c", str(confdir), "--raw", "-o", "ip", str(log), name],
                         capture_output=True, text=True, check=True).stdout
    norm = lambda a: str(ipaddress.ip_network(a, strict=False)) if "/" in a else str(ipaddress.ip_address(a))
    assert sorted(map(norm, out.split())) == sorted(norm(c.expect["host"]) for c in cases if c.should_match)


@pytest.mark.parametrize("line", [
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny TCP 203.0.113.7:51212 198.51.100.1:23 in via em0 " + "A" * 5000,
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny TCP " + "[" * 3000 + " in via em0",
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny TCP 999.1.1.1:1 198.51.100.1:23 in via em0",
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny TCP [2001:db8::7:1 [2001:db8::1]:22 in via em0",
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny TCP 203.0.113.7\x00:51212 198.51.100.1:23 in via em0",
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny TCP 2001:db8::7:51212 [2001:db8::1]:23 in via em0",
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny TCP 203.0.113.256:51212 198.51.100.1:23 in via em0",
    "Nov 21 08:00:01 fw kernel: ipfw: 60000 Deny\tTCP 203.0.113.7:51212 198.51.100.1:23 in via em0 in via em1",
])
def test_hostile_ipfw_lines_ban_nobody(line, runner):
    assert runner({}, "ipfw").match(line) == []

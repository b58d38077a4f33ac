"""fail2ban's own sample test, unchanged: `fail2ban-testcases` runs its samplestestcase
for our three filters with CONFIG_DIR holding our filter.d and our sample logs in its
tests/files/logs/, exactly as if the filters had been sent upstream.

The installed fail2ban package is copied to a scratch directory (fail2ban-testcases
imports the package found in its working directory first), our logs are added to the
copy's tests/files/logs/, nothing is edited."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SAMPLES, UPSTREAM_NOW, UPSTREAM_TZ
from f2b_ext.system.filter_runner import stock_common_conf

FILTERS = ("netfilter", "ipfw", "synrecv")
TESTCASES = shutil.which("fail2ban-testcases")
SELECT = r"FilterSamplesRegex\.testSampleRegexs(?:NETFILTER|IPFW|SYNRECV)\)$"


def upstream_tree(tmp: Path) -> Path:
    import fail2ban
    shutil.copytree(Path(fail2ban.__file__).parent, tmp / "fail2ban",
                    ignore=shutil.ignore_patterns("__pycache__"))
    logs = tmp / "fail2ban" / "tests" / "files" / "logs"
    for sample in SAMPLES.iterdir():
        if sample.name.split("-")[0] in FILTERS:
            shutil.copy2(sample, logs / sample.name)
    conf = tmp / "config" / "filter.d"
    conf.mkdir(parents=True)
    shutil.copy2(stock_common_conf(), conf / "common.conf")
    for name in FILTERS:
        shutil.copy2(ROOT / "filter.d" / f"{name}.conf", conf)
    return tmp


def run_upstream(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FAIL2BAN_CONFIG_DIR=str(tree / "config"))
    env.pop("TZ", None)
    return subprocess.run([sys.executable, TESTCASES, "-l", "critical", SELECT], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not TESTCASES, reason="fail2ban-testcases not installed")
def test_fail2ban_samplestestcase_passes_for_our_filters(tmp_path):
    tree = upstream_tree(tmp_path)
    r = run_upstream(tree)
    assert r.returncode == 0, r.stderr[-4000:]
    assert re.search(r"^Ran 3 tests", r.stderr, re.M) and r.stderr.rstrip().endswith("OK"), r.stderr[-2000:]


@pytest.mark.skipif(not TESTCASES, reason="fail2ban-testcases not installed")
def test_the_harness_catches_a_wrong_time_and_an_untested_regex(tmp_path):
    """The run above can fail: one time field off by an hour fails it, and so does a
    filter option combination whose regex no sample matches."""
    tree = upstream_tree(tmp_path / "time")
    log = tree / "fail2ban" / "tests" / "files" / "logs" / "ipfw"
    text = log.read_text()
    log.write_text(text.replace('"time": "2005-03-01T18:49:05"', '"time": "2005-03-01T19:49:05"', 1))
    assert log.read_text() != text
    r = run_upstream(tree)
    assert r.returncode != 0 and "Time  mismatch" in r.stderr

    tree = upstream_tree(tmp_path / "nosample")
    log = tree / "fail2ban" / "tests" / "files" / "logs" / "synrecv"
    log.write_text(log.read_text() + '\n# filterOptions: {"ports": "9"}\n# failJSON: { "match": false }\n'
                   "2026-11-21T10:00:05+09:00 f2b-ext-synwatch[812]: half-open flood from 198.51.100.7: 24 SYN_RECV to port 443\n")
    r = run_upstream(tree)
    assert r.returncode != 0 and "Regex has no samples" in r.stderr


def test_our_clock_is_upstreams():
    """tests/conftest.py's upstream_clock is fail2ban's (tests/utils.py) zone and now."""
    import fail2ban
    src = (Path(fail2ban.__file__).parent / "tests" / "utils.py").read_text()
    assert f"TEST_NOW = {UPSTREAM_NOW}" in src
    assert f"os.environ['TZ'] = '{UPSTREAM_TZ}'" in src

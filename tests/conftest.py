"""Shared fixtures: a fail2ban config dir holding the suite's files, fail2ban's clock
pinned (sample stamps without a year read as 2026), times in UTC."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from f2b_ext.f2b_filter import FilterRunner, config_dir, ensure_utc  # noqa: E402

SAMPLES = ROOT / "tests" / "samples"
# 2026-11-21T12:00:00Z: "Nov 21 08:08:21" and "Mar 21 ..." resolve to 2026.
PINNED_NOW = 1795262400


def pytest_configure(config):
    ensure_utc()
    from fail2ban.server.mytime import MyTime
    MyTime.setTime(PINNED_NOW)


def is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture(scope="session")
def confdir(tmp_path_factory) -> Path:
    return config_dir(tmp_path_factory.mktemp("f2b-config"))


_RUNNERS: dict = {}


@pytest.fixture(scope="session")
def runner(confdir):
    """runner(options) -> a cached FilterRunner for filter netfilter with those options."""
    def get(options: dict, name: str = "netfilter") -> FilterRunner:
        key = (name, tuple(sorted(options.items())))
        if key not in _RUNNERS:
            _RUNNERS[key] = FilterRunner(name, options, confdir)
        return _RUNNERS[key]
    return get

"""Shared fixtures: a fail2ban config dir holding the suite's files, fail2ban's clock
pinned (sample stamps without a year read as 2026), times in UTC; and fail2ban's own
sample-test clock (`upstream_clock`), under which the failJSON samples are checked."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from f2b_ext.system.filter_runner import FilterRunner, config_dir, ensure_utc  # noqa: E402

SAMPLES = ROOT / "tests" / "samples"
# 2026-11-21T12:00:00Z: "Nov 21 08:08:21" and "Mar 21 ..." resolve to 2026.
PINNED_NOW = 1795262400


# fail2ban's tests/utils.py: TZ fixed to CET/CEST, "now" 2005-08-14T10:00:00Z. Sample
# times (failJSON "time") are local wall-clock times under that zone, and a stamp without
# a year reads as the last 2005-08-14 or before. test_upstream_harness checks these match.
UPSTREAM_TZ = "CET-01CEST-02,M3.5.0,M10.5.0"
UPSTREAM_NOW = 1124013600


@pytest.fixture
def upstream_clock():
    """The zone and clock fail2ban's samplestestcase runs under, for one test."""
    import time
    from fail2ban.server.mytime import MyTime
    saved = os.environ.get("TZ")
    os.environ["TZ"] = UPSTREAM_TZ
    time.tzset()
    MyTime.setTime(UPSTREAM_NOW)
    try:
        yield UPSTREAM_NOW
    finally:
        os.environ["TZ"] = saved if saved is not None else "UTC"
        time.tzset()
        MyTime.setTime(PINNED_NOW)


# The tiers a newcomer can run on their own (README "Tests"; Makefile test-pure,
# test-fail2ban, test-kernel): pure (no fail2ban, no root: the core, the layout, the
# command line's own checks), fail2ban (Debian's fail2ban: its Python, fail2ban-server,
# the upstream harness, the packaging), kernel (root, network namespaces: marked per
# test). A test file that needs fail2ban throughout is listed here, a test that uses one
# of FAIL2BAN_FIXTURES is marked so, any other carries @pytest.mark.fail2ban; `make test-pure` runs
# the others with fail2ban made unimportable (tests/tiers/no_fail2ban), which proves it.
FAIL2BAN_TIER = {
    "test_check.py", "test_cli.py", "test_deb.py", "test_demo.py", "test_escalate_action.py",
    "test_escalation_scenarios.py", "test_faults_live.py", "test_filter_hostile.py", "test_filter_samples.py",
    "test_fleet_lab.py", "test_forged_dependencies_live.py", "test_install.py", "test_jails.py",
    "test_kernel_live.py", "test_lab.py", "test_live.py", "test_netfilter_core.py",
    "test_other_filters.py", "test_rsyslog_forgery.py", "test_schedule.py", "test_setinvariant.py",
    "test_synwatch_live.py", "test_unit_sandbox.py", "test_upstream_harness.py", "test_wheel.py",
    "test_flood_memory.py", "test_nftevents_live.py",
}


def _pure_tier() -> bool:
    """fail2ban is the stand-in that cannot be imported (make test-pure)."""
    import importlib.util
    spec = importlib.util.find_spec("fail2ban")
    return spec is not None and "no_fail2ban" in Path(spec.origin or "").parts


def pytest_ignore_collect(collection_path, config):
    if collection_path.name in FAIL2BAN_TIER and _pure_tier():
        return True              # not even imported: these modules import fail2ban
    return None


# fixtures that run fail2ban's filter machinery: a test using one is in the fail2ban tier
FAIL2BAN_FIXTURES = {"runner", "confdir", "upstream_clock"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in FAIL2BAN_TIER or FAIL2BAN_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.fail2ban)


def pytest_configure(config):
    ensure_utc()
    try:
        from fail2ban.server.mytime import MyTime
    except ImportError:          # the pure tier: no fail2ban to pin
        return
    MyTime.setTime(PINNED_NOW)


def is_root() -> bool:
    return os.geteuid() == 0


def cli_as(user: str, *args, cwd=None):
    """`f2b-ext ARGS` run as another user. That user may not read the clone (say, under
    /root) nor its venv: the system's python runs a copy of the package from a directory
    anyone can read."""
    import shutil
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory(prefix="f2bx-cli-") as where:
        os.chmod(where, 0o755)
        shutil.copytree(ROOT / "f2b_ext", Path(where) / "f2b_ext", ignore=shutil.ignore_patterns("__pycache__"))
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-m", "f2b_ext",
               *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or where, timeout=120,
                              env=dict(os.environ, PYTHONPATH=where))


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


def assert_sample(case, found: list):
    """fail2ban's verdict on a failJSON sample (`found`: FilterRunner.match) is what the
    sample expects: no match, or exactly one with its host, captures and time (local
    time, as fail2ban's samplestestcase reads it: run under `upstream_clock`)."""
    from datetime import datetime
    import time
    desc = case.expect.get("desc", "")
    if not case.should_match:
        assert found == [], f"matched but must not ({desc}): {[(m.ip, m.groups) for m in found]}"
        return
    assert len(found) == 1, f"expected exactly one match ({desc}), got {len(found)}"
    match = found[0]
    for key, want in case.captures.items():
        got = match.ip if key == "host" else match.groups.get(key)
        assert got == want, f"{key}: {got!r} != {want!r} ({desc})"
    if "time" in case.expect:
        when = datetime.fromisoformat(case.expect["time"])
        # exactly, as upstream compares (fail2ban keeps whole seconds of these stamps)
        assert match.time == time.mktime(when.timetuple()) + when.microsecond / 1e6, desc


def jail_backends(confdir, allow_no_files: bool = False) -> dict[str, str]:
    """{jail: backend} of the enabled jails, as fail2ban's own JailsReader resolves them
    (a file backend needs its log files unless `allow_no_files`)."""
    from fail2ban.client.jailsreader import JailsReader
    reader = JailsReader(basedir=str(confdir), force_enable=False)
    assert reader.read() and reader.getOptions()
    return {cmd[1]: cmd[2] for cmd in reader.convert(allow_no_files=allow_no_files) if cmd[0] == "add"}


# -- a real fail2ban-server fed with kernel lines (f2b_ext.lab.fail2ban_server) --
KERNEL_LINE = ("{stamp} lab kernel: [  444.910152] FINAL_REJECT: IN=eth0 OUT= MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "
               "SRC={src} DST={dst} LEN=60 TOS=0x00 PREC=0x00 TTL=51 ID=5 DF PROTO={proto}{tail}")
TAILS = {"TCP": " SPT=40000 DPT=23 WINDOW=1024 RES=0x00 SYN URGP=0", "UDP": " SPT=40000 DPT=161 LEN=20",
         "ICMP": " TYPE=8 CODE=0 ID=1 SEQ=1", "47": ""}


def escalate_jail(params: str, ignoreip: str = "127.0.0.1/8 ::1", bantime: int = 600) -> str:
    """A jail `escalate` reading the server's log with subnet-escalate.py[params]. The
    server runs in this machine's namespace, whose peers (its own connections, which
    may be on the documentation ranges the tests attack) are not the test's: peers=allow
    unless the test says otherwise."""
    if "peers=" not in params:
        params += ', peers="allow"'
    return f"""[escalate]
enabled = true
filter = netfilter
logpath = {{log}}
backend = polling
maxretry = 1
findtime = 1h
bantime = {bantime}
ignoreip = {ignoreip}
action = subnet-escalate.py[{params}]
"""


def kernel_line(src: str, proto: str = "TCP", when: float | None = None) -> str:
    import ipaddress
    import time
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(when or time.time()))
    # as the kernel prints them: %pI6 expanded, both addresses of one family
    src, dst = (ipaddress.ip_address(src).exploded, ipaddress.ip_address("2001:db8::1").exploded) \
        if ":" in src else (src, "192.0.2.1")
    return KERNEL_LINE.format(stamp=stamp, src=src, dst=dst, proto=proto, tail=TAILS[proto])


# -- what a set action (nftset, ipset-net) is handed by fail2ban --
class FakeJail:
    """Only what a set action reads: the jail's name and its ban list (a real
    BanManager, for repair)."""
    def __init__(self, name):
        from fail2ban.server.banmanager import BanManager
        self.name = name
        manager = BanManager()
        self.actions = type("Actions", (), {"banManager": manager, "getBanTime": manager.getBanTime})()

    def add_ban(self, ip: str, bantime: int = 600, listed: bool = True, stored: bool = True):
        """A ban in fail2ban's list (`listed`) and in its database (`stored`, when the
        jail has one: use_database)."""
        from fail2ban.server.mytime import MyTime
        from fail2ban.server.ticket import BanTicket
        ticket = BanTicket(ip, MyTime.time())
        ticket.setBanTime(bantime)
        if listed:
            self.actions.banManager.addBanTicket(ticket)
        if stored and getattr(self, "database", None) is not None:
            self.database.addBan(self, ticket)

    def use_database(self, path):
        """fail2ban's real database (sqlite) at `path`."""
        from fail2ban.server.database import Fail2BanDb
        self.database = Fail2BanDb(str(path))
        self.database.addJail(self)
        return self

    def getMaxBanTime(self):           # what Fail2BanDb asks a jail
        return -1


def info(ip, bantime=600, when=None):
    """What fail2ban hands an action; times on fail2ban's clock (pinned in the tests)."""
    from fail2ban.server.ipdns import IPAddr
    from fail2ban.server.mytime import MyTime
    return {"ip": IPAddr(ip), "bantime": bantime, "time": when or MyTime.time()}


@pytest.fixture
def lab_nft():
    """(Lab, in_netns): a fresh pair of namespaces."""
    from f2b_ext.lab.netns import Lab, in_netns
    with Lab() as lab:
        yield lab, in_netns


def fake_root(tmp_path: Path, journal: bool = False) -> Path:
    """A root for `install --root`: this machine's fail2ban configuration, rsyslog.d,
    systemd's unit directory and, with `journal`, a journal directory."""
    import shutil
    root = tmp_path / "root"
    shutil.copytree("/etc/fail2ban", root / "etc" / "fail2ban")
    (root / "etc" / "rsyslog.d").mkdir()
    if journal:
        (root / "var" / "log" / "journal").mkdir(parents=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    return root

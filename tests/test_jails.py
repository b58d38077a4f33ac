"""The shipped jails (jail.d/f2b-ext.conf): disabled as installed; enabled in a
jail.local, every one starts in a real fail2ban-server (root, in a network namespace,
since their actions change the firewall) and bans what its log rule is for."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import ROOT, is_root, jail_backends

SYSLOG_JAILS = ("f2b-ext-inbound", "f2b-ext-firewalld", "f2b-ext-ufw", "f2b-ext-outbound", "f2b-ext-gre")
JAILS = SYSLOG_JAILS + ("f2b-ext-synrecv",        # reads the watcher's own file
                       "f2b-ext-ipfw")           # FreeBSD's /var/log/security
LINE = ("{stamp} lab kernel: [  444.910152] {prefix}IN={inn} OUT={out} {mac}SRC={src} DST={dst} LEN=60 TOS=0x00 "
        "PREC=0x00 TTL=51 ID=5 DF PROTO=TCP SPT={spt} DPT={dpt} WINDOW=1024 RES=0x00 SYN URGP=0")
MAC = "MAC=52:54:00:12:34:56:52:54:00:65:43:21:08:00 "


GRE = ("{stamp} lab kernel: [  444.910152] IN=eth0 OUT= " + MAC + "SRC={src} DST=192.0.2.1 LEN=52 TOS=0x00 "
       "PREC=0x00 TTL=52 ID=0 DF PROTO=47")


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())


def line(prefix: str, src: str, dst: str = "192.0.2.1", out: bool = False, dpt: int = 23,
         proto: str = "TCP") -> str:
    text = LINE.format(stamp=stamp(), prefix=prefix, inn="" if out else "eth0", out="eth0" if out else "",
                       mac="" if out else MAC, src=src, dst=dst, spt=40000, dpt=dpt)
    if proto == "UDP":
        text = text.split(" PROTO=")[0] + f" PROTO=UDP SPT=40000 DPT={dpt} LEN=40"
    return text


def shipped_action(jail: str, escalate_option: str) -> str:
    """The jail's action as shipped, with one more subnet-escalate option, for jail.local."""
    from configparser import RawConfigParser
    conf = RawConfigParser()
    conf.read(ROOT / "jail.d" / "f2b-ext.conf")
    lines = conf.get(jail, "action").strip().splitlines()
    lines = [ln.replace("]", f", {escalate_option}]") if ln.startswith("subnet-escalate") else ln for ln in lines]
    assert any(escalate_option in ln for ln in lines), lines
    return "\n    ".join(lines)


def gre(src: str) -> str:
    return GRE.format(stamp=stamp(), src=src)


def ipfw(src: str, dpt: int) -> str:
    """A FreeBSD kernel's ipfw log line (syslogd's classic stamp)."""
    return time.strftime("%b %e %H:%M:%S", time.localtime()) + \
        f" fw kernel: ipfw: 60000 Deny TCP {src}:40000 198.51.100.1:{dpt} in via em0"


def synwatch(source: str, count: int = 65, port: int = 80) -> str:
    """A line as `f2b-ext synwatch` writes it to its file."""
    import ipaddress
    from f2b_ext.core.synwatch import Offender, offender_line
    net = ipaddress.ip_network(source)
    addresses = None if net.prefixlen == net.max_prefixlen else count
    return f"{stamp()} f2b-ext-synwatch[812]: " + offender_line(Offender(net, count, port, 0, addresses))


def test_every_shipped_jail_is_disabled():
    from configparser import RawConfigParser
    conf = RawConfigParser()
    conf.read(ROOT / "jail.d" / "f2b-ext.conf")
    assert set(conf.sections()) == set(JAILS)
    assert all(conf.get(jail, "enabled") == "false" for jail in JAILS)
    assert all("kern.log" not in conf.get(jail, "logpath") and "syslog" not in conf.get(jail, "logpath")
               for jail in JAILS)


# syslog_backend in Debian's paths-debian.conf, by Debian release: 12 (fail2ban 1.0.2)
# leaves `auto` (a log file); 13 (1.1.0-8) says systemd (the journal).
DEBIAN_SYSLOG_BACKEND = {"12": "auto", "13": "systemd"}


def test_backend_is_chosen_like_stock_jails():
    """Debian's paths file decides by release (DEBIAN_SYSLOG_BACKEND); Arch's says systemd
    (the journal, logpath unused). fail2ban's own JailsReader resolves it."""
    from f2b_ext.system.filter_runner import config_dir
    import shutil, tempfile
    debian = DEBIAN_SYSLOG_BACKEND[Path("/etc/debian_version").read_text().split(".")[0]]
    for paths, want in (("paths-debian.conf", debian), ("paths-arch.conf", "systemd")):
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copytree("/etc/fail2ban", tmp, dirs_exist_ok=True)
            for stock in (Path(tmp) / "jail.d").glob("*"):
                stock.unlink()
            config_dir(Path(tmp))
            jail_conf = Path(tmp) / "jail.conf"
            jail_conf.write_text(jail_conf.read_text().replace("before = paths-debian.conf", f"before = {paths}"))
            (Path(tmp) / "jail.local").write_text("".join(f"[{j}]\nenabled = true\n" for j in JAILS))
            # no /var/log/netfilter.log here
            want = {j: want for j in SYSLOG_JAILS} | {"f2b-ext-synrecv": "auto", "f2b-ext-ipfw": "auto"}
            assert jail_backends(tmp, allow_no_files=True) == want


@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")
def test_enabled_jails_start_and_ban_what_they_are_for():
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    from f2b_ext.lab.netns import Lab, until
    # the namespace has no resolver: fail2ban's ignoreself would stall on looking up
    # this host's names (the filter never bans the server itself anyway)
    local = ("[DEFAULT]\nignoreself = false\n\n"
             # the others follow its logpath and backend
             "[f2b-ext-inbound]\nenabled = true\nlogpath = {log}\nbackend = polling\n\n"
             + "".join(f"[{jail}]\nenabled = true\n\n" for jail in SYSLOG_JAILS[1:]
                       if jail != "f2b-ext-outbound")
             # the shipped action line, but documentation ranges (bogons) may escalate
             + "[f2b-ext-outbound]\nenabled = true\naction = " + shipped_action("f2b-ext-outbound", "bogons=none")
             + "\n\n"
             + "[f2b-ext-synrecv]\nenabled = true\nlogpath = {log}\nbackend = polling\n\n"
             # FreeBSD's ipfw lines, banned here into Linux's nft sets
             + "[f2b-ext-ipfw]\nenabled = true\nlogpath = {log}\nbackend = polling\n"
               "banaction_f2b_ext = nftset.py[direction=in]\n")
    with Lab() as lab:
        f2b = Fail2banServer(local, netns=lab.server)
        try:
            f2b.start(jail="f2b-ext-outbound")
            assert all(j in f2b.client("status").stdout for j in JAILS)
            f2b.append(*[line("FINAL_REJECT: ", "203.0.113.5", dpt=p) for p in (22, 23, 25)],
                       *[line("[UFW BLOCK] ", "198.51.100.5", dpt=p) for p in (22, 23, 25)],
                       # UDP, which inbound would be forgeable: outbound evidence counts whatever the protocol
                       *[line("UNKNOWN_OUTGOING: ", "192.0.2.1", dst=f"203.0.113.{h}", out=True, dpt=4444,
                              proto="UDP") for h in range(66, 71)],
                       gre("203.0.113.47"), gre("203.0.113.47"),
                       synwatch("198.18.7.0/24"), synwatch("198.18.7.0/24"),
                       *[ipfw("198.18.9.9", dpt=p) for p in (22, 23, 25)])
            f2b.wait_for(lambda: "203.0.113.66" in f2b.bans("f2b-ext-outbound"), what="the outbound ban")
            # five called remotes of one /24: egress to the /24 is blocked
            f2b.wait_for(lambda: "203.0.113.0/24" in f2b.bans("f2b-ext-outbound"), what="the outbound /24")
            f2b.wait_for(lambda: {"203.0.113.5", "198.51.100.5"} <= set(f2b.bans("f2b-ext-inbound")),
                         what="the inbound bans")
            f2b.wait_for(lambda: "203.0.113.47" in f2b.bans("f2b-ext-gre"), what="the GRE ban")
            f2b.wait_for(lambda: "198.18.7.0/24" in f2b.bans("f2b-ext-synrecv"), what="the SYN_RECV /24 ban")
            assert set(f2b.bans("f2b-ext-synrecv")) == {"198.18.7.0/24"}           # never the others' lines
            f2b.wait_for(lambda: "198.18.9.9" in f2b.bans("f2b-ext-ipfw"), what="the ipfw ban")
            # each jail reads the log in its own thread: wait for theirs too
            f2b.wait_for(lambda: "203.0.113.5" in f2b.bans("f2b-ext-firewalld"), what="the firewalld ban")
            f2b.wait_for(lambda: "198.51.100.5" in f2b.bans("f2b-ext-ufw"), what="the ufw ban")
            assert set(f2b.bans("f2b-ext-ipfw")) == {"198.18.9.9"}
            assert set(f2b.bans("f2b-ext-gre")) == {"203.0.113.47"}      # never the scans
            assert set(f2b.bans("f2b-ext-firewalld")) == {"203.0.113.5"}
            assert set(f2b.bans("f2b-ext-ufw")) == {"198.51.100.5"}
            assert "192.0.2.1" not in f2b.bans("f2b-ext-outbound")
            # fail2ban lists a ban before its actions have run: wait for the kernel's sets
            def both_banned():
                text = lab.server_sh("nft", "list", "table", "inet", "f2b_ext")
                return text if all(a in text for a in ("203.0.113.66", "203.0.113.0/24", "203.0.113.5",
                                                        "198.18.7.0/24")) else None
            ruleset = until(both_banned, 15)
            assert ruleset and "f2b_ext_outbound_output" in ruleset and "f2b_ext_inbound_input" in ruleset
            # subnet-escalate's own view; spoofable is at its default (ignore), so escalating
            # on UDP lines shows that outbound evidence is not taken as forged
            escalated = f2b.client("get", "f2b-ext-outbound", "action", "subnet-escalate", "escalations").stdout
            assert "203.0.113.0/24 until" in escalated, escalated
        finally:
            f2b.close()


@pytest.mark.fail2ban
@pytest.mark.parametrize("path", sorted((ROOT / "action.d").glob("*.py")), ids=lambda p: p.name)
def test_every_python_action_survives_a_reload(path):
    """fail2ban's Actions.add (1.0.2, 1.1.0) keeps an action across `fail2ban-client reload`
    only if it has reload() and clearAllParams(); otherwise the reload drops it silently."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"f2bx_action_{path.stem.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module.Action, "reload", None)) and callable(getattr(module.Action, "clearAllParams", None))

@pytest.mark.kernel
@pytest.mark.skipif(not is_root(), reason="needs root for a network namespace")
def test_reloads_keep_every_action_of_the_inbound_jail_and_every_ban_in_the_kernel(tmp_path):
    """`reload JAIL`, `reload` and `reload --restart JAIL` on the shipped inbound jail (plus a
    fleet publisher): fail2ban keeps a Python action across a reload only if it has both
    reload() and clearAllParams(), else it silently drops it ("No actions for jail")."""
    import ipaddress
    from f2b_ext.core.nftset import jail_elements
    from f2b_ext.lab.fail2ban_server import Fail2banServer
    from f2b_ext.lab.netns import Lab, until
    jail = "f2b-ext-inbound"
    local = ("[DEFAULT]\nignoreself = false\n\n"
             f"[{jail}]\nenabled = true\nlogpath = {{log}}\nbackend = polling\n"
             f"action = {shipped_action(jail, 'bogons=none')}\n"
             f"    fleet.py[role=publish, server=lab, spool={tmp_path}/spool.sqlite3]\n")
    expected = ["nftset", "subnet-escalate", "found-limit", "fleet"]
    with Lab() as lab:
        f2b = Fail2banServer(local, netns=lab.server)

        def actions() -> list[str]:
            out = f2b.client("get", jail, "actions", check=False).stdout.strip().splitlines()
            return out[-1].split(", ") if len(out) == 2 else out

        def ban(src: str):
            f2b.append(*[line("FINAL_REJECT: ", src, dpt=p) for p in (22, 23, 25)])
            f2b.wait_for(lambda: src in f2b.bans(jail), what=f"the ban of {src}")

        def kernel_holds_every_listed_ban():
            listed = {ipaddress.ip_network(a) for a in f2b.bans(jail)}
            held = set(jail_elements(jail, lambda *args: lab.server_sh("nft", *args, check=False)))
            return listed if listed <= held else None

        try:
            f2b.start(jail=jail)
            assert actions() == expected
            ban("203.0.113.5")
            ban("198.51.100.5")
            for n, step in enumerate((["reload", jail], ["reload"], ["reload", "--restart", jail]), 1):
                published = int(f2b.client("get", jail, "action", "fleet", "published").stdout)
                f2b.client(*step)
                assert actions() == expected, f"after {' '.join(step)}: {actions()}"
                new = f"198.18.0.{100 + n}"
                ban(new)
                held = until(kernel_holds_every_listed_ban, 10)
                assert held and len(held) == 2 + n, f"after {' '.join(step)}: kernel misses a listed ban"
                assert until(lambda: not lab.probe(new), 15), f"after {' '.join(step)}: {new} still answered"
                assert lab.answered_within("198.18.0.200"), "an unbanned control is answered"
                if "--restart" not in step:      # a restarted action starts counting anew
                    assert f2b.wait_for(lambda: int(f2b.client("get", jail, "action", "fleet", "published").stdout)
                                        > published, what="the fleet publisher to publish the new ban")
        finally:
            f2b.close()

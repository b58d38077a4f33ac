"""Adapter: a fleet lab on the real kernel (root only): three servers in network
namespaces, each with its own nats-server (clustered, TLS, per-server credentials from
`f2b-ext fleet init`), a real fail2ban-server (a local jail with nftset + fleet publish,
the fleet jail with nftset + fleet inbox) and a fleet agent.

How it works: a hub namespace holds a bridge; each server namespace has one veth to it
with an address of 198.18.0.0/24 (benchmark range). Nothing else is reachable, and all
traffic stays between these namespaces. Namespace names carry this process's pid and
the lab's number (f2b_ext.lab.netns' tag); every namespace and process is removed on
close(), also when setup failed half way (LabScope).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from f2b_ext.system import fleet_init, fleet_sets
from f2b_ext.core import nftset
from f2b_ext.lab.fail2ban_server import IMPORT_ROOT, Fail2banServer
from f2b_ext.lab.netns import Background, LabScope, new_tag, sh, until

NAMES = ("a", "b", "c")
FLEET_JAIL, LOCAL_JAIL = "f2b-ext-fleet", "local"
REMOTE_SETS = fleet_sets.NAME          # the agent's own sets: remote host bans


def jail_conf(name: str, spool: Path) -> str:
    return f"""[{LOCAL_JAIL}]
enabled = true
filter = netfilter
logpath = {{log}}
backend = polling
maxretry = 1
findtime = 1h
bantime = 3600
ignoreip = 127.0.0.1/8
action = nftset.py[direction=in, checkinterval=0]
         fleet.py[role=publish, server={name}, spool={spool}]

[{FLEET_JAIL}]
enabled = true
filter = netfilter
logpath = {{log}}.fleet
backend = polling
maxretry = 1000000
bantime = 3600
action = nftset.py[direction=in, checkinterval=0]
         fleet.py[role=inbox, server={name}]
"""


class FleetLab(LabScope):
    def __init__(self, names=NAMES, agent_settings: dict | None = None, per_server: dict | None = None):
        super().__init__()
        self.tag = f"f2bx{new_tag()}"
        self.names = list(names)
        self.addr = {n: f"198.18.0.{i + 1}" for i, n in enumerate(self.names)}
        self.ns = {n: f"{self.tag}-{n}" for n in self.names}
        self.hub = f"{self.tag}-hub"
        self.dir = Path(tempfile.mkdtemp(prefix=f"f2bx-fleet-{os.getpid()}-"))
        self.nats: dict = {}
        self.agents: dict = {}
        self.f2b: dict = {}
        self.agent_settings = dict(agent_settings or {})
        self.per_server = dict(per_server or {})
        self._ready_before: dict = {}

    # -- setup --
    def build(self):
        self.add_netns(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, n in enumerate(self.names):
            ns = self.ns[n]
            self.add_netns(ns)
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", self.hub)
            sh("ip", "-n", self.hub, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.addr[n]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        fleet_init.write(self.dir / "init", self.addr, str(self.dir / "store"))
        for n in self.names:
            self.start_nats(n)
        self.wait_cluster()
        for attempt in range(30):          # until JetStream's meta group has a leader
            try:
                self.fleet_cli("create", "--config", str(self.dir / "init" / "admin" / "fleet.conf"))
                break
            except RuntimeError:
                if attempt == 29:
                    raise
                time.sleep(1)
        for n in self.names:
            self.start_fail2ban(n)
            self.start_agent(n)

    def start_nats(self, n: str):
        self._ready_before[n] = self.nats_log(n).count("Server is ready")     # earlier runs' lines
        logf = open(self.dir / f"nats-{n}.log", "a")
        self.nats[n] = subprocess.Popen(["ip", "netns", "exec", self.ns[n], "nats-server", "-c",
                                         str(self.dir / "init" / n / "nats-server.conf")],
                                        stdout=logf, stderr=subprocess.STDOUT)

    def kill_nats(self, n: str, sig=signal.SIGKILL):
        proc = self.nats.pop(n)
        proc.send_signal(sig)
        proc.wait(20)

    def wait_cluster(self, timeout: float = 60):
        """Every server's JetStream answers (the meta group has a leader)."""
        def ready():
            return all(self.nats_log(n).count("Server is ready") > self._ready_before.get(n, 0) for n in self.nats)
        if not until(ready, timeout, 0.2):
            raise RuntimeError("nats-server did not start: " + self.nats_log(self.names[0])[-2000:])

    def nats_log(self, n: str) -> str:
        path = self.dir / f"nats-{n}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_fail2ban(self, n: str):
        work = self.dir / f"f2b-{n}"
        srv = Fail2banServer(jail_conf(n, self.dir / f"spool-{n}.sqlite3"), netns=self.ns[n], workdir=work)
        (work / "kern.log.fleet").touch()
        self.f2b[n] = srv                    # close() stops it even if start() is interrupted
        srv.start(timeout=60, jail=FLEET_JAIL)

    def agent_conf(self, n: str) -> Path:
        path = self.dir / f"agent-{n}.conf"
        text = (self.dir / "init" / n / "fleet.conf").read_text()
        extra = dict(spool=self.dir / f"spool-{n}.sqlite3", status=self.dir / f"status-{n}.json",
                     socket=self.f2b[n].sock, jail=FLEET_JAIL, bogons="none")
        extra.update(self.agent_settings)
        extra.update(self.per_server.get(n, {}))
        path.write_text(text + "".join(f"{k} = {v}\n" for k, v in extra.items()))
        return path

    def start_agent(self, n: str):
        logf = open(self.dir / f"agent-{n}.log", "a")
        env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
        self.agents[n] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[n], sys.executable, "-m", "f2b_ext", "fleet", "run",
             "--config", str(self.agent_conf(n))], stdout=logf, stderr=subprocess.STDOUT, env=env)

    def stop_agent(self, n: str, sig=signal.SIGTERM):
        proc = self.agents.pop(n)
        proc.send_signal(sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_server(self, n: str, sig=signal.SIGTERM):
        """Server n goes down: its agent (with `sig`), then its fail2ban (stopped)."""
        self.stop_agent(n, sig)
        self.f2b[n].stop()

    def start_server(self, n: str):
        """Server n comes back: its fail2ban (restoring its bans from its database), then its agent."""
        self.f2b[n].start(timeout=120, jail=FLEET_JAIL)
        self.start_agent(n)

    def agent_log(self, n: str) -> str:
        path = self.dir / f"agent-{n}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def status(self, n: str) -> dict:
        try:
            return json.loads((self.dir / f"status-{n}.json").read_text())
        except (OSError, ValueError):
            return {}

    def fleet_cli(self, *args: str, ns: str | None = None) -> str:
        env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
        cmd = [sys.executable, "-m", "f2b_ext", "fleet", *args]
        if ns or self.names:
            cmd = ["ip", "netns", "exec", ns or self.ns[self.names[0]], *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"f2b-ext fleet {' '.join(args)}: {r.stderr.strip()[-2000:]}")
        return r.stdout

    # -- what the kernel holds --
    def kernel_set(self, n: str, jail: str = REMOTE_SETS, family: int = 4) -> set[str]:
        """Addresses in server n's host set of `jail`: by default the agent's own
        (remote host bans), FLEET_JAIL for the fleet jail's (remote = fail2ban)."""
        name = f"{nftset.jail_key(jail)}_h{family}"
        out = sh("ip", "netns", "exec", self.ns[n], "nft", "-j", "list", "set", "inet", nftset.TABLE.split()[-1], name,
                 check=False)
        found = set()
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for item in json.loads(out or "{}")["nftables"]:
                for elem in item.get("set", {}).get("elem", []):
                    val = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
                    found.add(str(val))
        return found

    def prefix_set(self, n: str, plen: int, jail: str = FLEET_JAIL) -> set[str]:
        import ipaddress
        name = nftset.set_name(jail, ipaddress.ip_network(f"203.0.113.0/{plen}"))
        out = sh("ip", "netns", "exec", self.ns[n], "nft", "list", "set", "inet", nftset.TABLE.split()[-1], name,
                 check=False)
        return set(out.split("elements = {")[-1].split("}")[0].replace(",", " ").split()) if "elements" in out else set()

    # -- the three views of one server, as the fault tests compare them --
    def held(self, n: str) -> dict:
        """{network: seconds left or None}: every element of every set in every f2b-ext
        table of n's kernel, whichever jail or writer put it there (read with nft)."""
        out = sh("ip", "netns", "exec", self.ns[n], "nft", "-j", "list", "ruleset", check=False)
        return f2bx_elements(out)

    def listed(self, n: str) -> dict:
        """{network: seconds left or None}: what n lists as banned, fail2ban's lists of
        both jails (`get JAIL banip --with-time`) and its agent's own list together."""
        from f2b_ext.lab.live import listed_with_ends
        return self._with_agents(n, listed_with_ends)

    def stored(self, n: str) -> dict:
        """{network: seconds left or None}: the bans n's fail2ban database holds as
        current, and those its agent's ledger file holds."""
        from f2b_ext.lab.live import database_bans
        return self._with_agents(n, database_bans)

    def _with_agents(self, n: str, per_jail) -> dict:
        """The agent's list with `per_jail(fail2ban, jail)` of both jails merged in."""
        merged = self.agent_listed(n)
        for jail in (LOCAL_JAIL, FLEET_JAIL):
            for net, left in per_jail(self.f2b[n], jail).items():
                merged[net] = _longer(merged.get(net, 0), left)
        return merged

    def agent_listed(self, n: str) -> dict:
        """{network: seconds left}: the remote bans n's agent lists itself, read from its
        ledger file, when it keeps one (f2b_ext.system.fleet_ledger: the agent writes remote host
        bans to the kernel itself); none while they go through fail2ban's fleet jail."""
        import ipaddress
        try:
            from f2b_ext.system.fleet_ledger import LedgerStore, default_path
        except ImportError:                  # remote bans go through the fleet jail only
            return {}
        path = Path(default_path(str(self.dir / f"spool-{n}.sqlite3")))
        if not path.exists():
            return {}
        now = time.time()
        store = LedgerStore(str(path), readonly=True)
        try:
            return {ipaddress.ip_network(target): until - now for target, until, _ in store.bans(now)}
        finally:
            store.close()

    def disagreement(self, n: str, tolerance: float = 5) -> str:
        """'' when what n lists, what its database stores and what its kernel holds agree
        (the same networks listed and held, every listed one stored, end times within
        `tolerance` seconds), else what differs."""
        listed, stored, held = self.listed(n), self.stored(n), self.held(n)
        problems = []
        if set(listed) != set(held):
            only_l, only_k = sorted(map(str, set(listed) - set(held))), sorted(map(str, set(held) - set(listed)))
            problems.append(f"{n}: listed only {only_l[:5]} ({len(only_l)}), kernel only {only_k[:5]} ({len(only_k)})")
        unstored = sorted(map(str, set(listed) - set(stored)))
        if unstored:
            problems.append(f"{n}: not in the database: {unstored[:5]} ({len(unstored)})")
        def apart(left, have):
            if left is None or have is None:
                return (left is None) != (have is None)
            return abs(left - have) > tolerance
        late = [f"{net} listed {left} held {held[net]}" for net, left in listed.items()
                if net in held and apart(left, held[net])]
        if late:
            problems.append(f"{n}: end times differ: {late[:3]} ({len(late)})")
        return "; ".join(problems)

    def settled(self, names=None, timeout: float = 60, tolerance: float = 5) -> str:
        """Wait until every server's three views agree; '' or the last difference."""
        last = [""]

        def agree():
            last[0] = "; ".join(filter(None, (self.disagreement(n, tolerance) for n in names or self.f2b)))
            return not last[0]
        return "" if until(agree, timeout, 0.5) else last[0]

    def bus(self, n: str | None = None) -> dict:
        """The stream as nats-server reports it, asked from n's namespace with the
        administrator's credential: {"messages": {subject: count}, "last_seq",
        "leader", "replicas": {name: current?}, "consumers": {durable: {"delivered",
        "ack_floor", "pending", "ack_pending", "redelivered"}}}."""
        return _job(self, n or next(iter(self.nats)), {"op": "bus", "consumers": self.names},
                    self.dir / "init" / "admin" / "fleet.conf")

    # -- teardown --
    def close(self):
        for n in list(self.agents):
            with contextlib.suppress(Exception):
                self.stop_agent(n)
        for srv in self.f2b.values():
            with contextlib.suppress(Exception):
                srv.stop()
        for n in list(self.nats):
            with contextlib.suppress(Exception):
                self.kill_nats(n, signal.SIGTERM)
        self.remove_namespaces()
        if not os.environ.get("F2BX_KEEP_LAB"):
            shutil.rmtree(self.dir, ignore_errors=True)


# -- a raw publisher, run inside a server's namespace with that server's credentials --
def publish_as(lab: FleetLab, n: str, subject: str, payloads: list[bytes], timeout: float = 2,
               conf: Path | None = None, connections: int = 1) -> dict:
    """Publish `payloads` to `subject` (or to each payload's own subject when `subject`
    is None: f2bx.bans.<origin>) from server n's namespace, with n's credentials (as a
    compromised server would) or with `conf`'s, over `connections` connections, one
    per origin. Returns {"acked": k, "errors": [first few error texts], "seconds": t}."""
    items = [[subject or f"f2bx.bans.{json.loads(p)['origin']}", p.decode()] for p in payloads]
    return _job(lab, n, {"op": "publish", "items": items, "timeout": timeout, "connections": connections},
                conf or lab.agent_conf(n))


def f2bx_elements(ruleset_json: str) -> dict:
    """{network: seconds left or None} of every set in the f2b-ext tables of `nft -j list
    ruleset`'s answer (the longest, when two sets hold one network)."""
    from f2b_ext.core.nftset import elements
    held: dict = {}
    for item in (json.loads(ruleset_json).get("nftables", ()) if ruleset_json.strip() else ()):
        if item.get("set", {}).get("table", "").startswith("f2b"):
            for net, left in elements({"nftables": [item]}).items():
                held[net] = _longer(held.get(net, 0), left)
    return held


class SetWatch(Background):
    """When each network first appeared in some servers' kernels: one thread per server,
    inside its namespace, lists its f2b-ext sets with libnftables every `every` seconds;
    `first[n][network]` is the time.time() of the first listing that held it."""

    def __init__(self, lab: FleetLab, names, every: float = 0.005):
        self.lab, self.names, self.every = lab, list(names), every
        self.first: dict = {n: {} for n in self.names}
        super().__init__(*(functools.partial(self._watch, n) for n in self.names))

    def _watch(self, n: str):
        from nftables import Nftables
        from f2b_ext.system.libnftables import LIBNFTABLES      # libnftables' JSON output is not thread-safe
        from f2b_ext.lab.netns import in_netns
        with in_netns(self.lab.ns[n]):
            nft = Nftables()
            nft.set_json_output(True)
            while not self._stop.is_set():
                with LIBNFTABLES:
                    rc, out, _ = nft.cmd("list ruleset")
                now = time.time()
                if rc == 0:
                    for net in f2bx_elements(out):
                        self.first[n].setdefault(net, now)
                self._stop.wait(self.every)

    def when(self, n: str, target: str, timeout: float) -> float | None:
        """The time `target` first appeared in n's kernel, waiting up to `timeout` seconds."""
        import ipaddress
        net = ipaddress.ip_network(target)
        until(lambda: net in self.first[n], timeout, 0.01)
        return self.first[n].get(net)


def _longer(a, b):
    """The longer of two remaining times (None: for ever)."""
    return None if a is None or b is None else max(a, b)


def _job(lab: FleetLab, n: str, spec: dict, conf: Path) -> dict:
    """Run a NATS job (publish, bus) in n's namespace with `conf`'s credentials; its answer."""
    src = lab.dir / f"job-{time.monotonic_ns()}.json"
    src.write_text(json.dumps(spec))
    env = dict(os.environ, PYTHONPATH=str(IMPORT_ROOT))
    r = subprocess.run(["ip", "netns", "exec", lab.ns[n], sys.executable, "-m", "f2b_ext.lab.fleet",
                        str(conf), str(src)], capture_output=True, text=True, env=env, timeout=900)
    src.unlink(missing_ok=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.splitlines()[-1])


def _bus_main(cfg, spec: dict):
    import asyncio
    import ssl
    import nats
    from f2b_ext.core.fleet import STREAM

    async def main():
        nc = await nats.connect(servers=cfg.nats, user=cfg.user, password=cfg.password, connect_timeout=3,
                                tls=ssl.create_default_context(cafile=cfg.ca) if cfg.ca else None)
        try:
            jsm = nc.jsm()
            info = await jsm.stream_info(STREAM, subjects_filter="f2bx.bans.>")
            consumers = {}
            for name in spec["consumers"]:
                try:
                    c = await jsm.consumer_info(STREAM, name)
                except Exception:
                    continue
                consumers[name] = {"delivered": c.delivered.stream_seq, "ack_floor": c.ack_floor.stream_seq,
                                   "pending": c.num_pending, "ack_pending": c.num_ack_pending,
                                   "redelivered": c.num_redelivered}
            cluster = info.cluster
            print(json.dumps({"messages": info.state.subjects or {}, "last_seq": info.state.last_seq,
                              "leader": cluster.leader if cluster else None,
                              "replicas": {p.name: bool(p.current) for p in (cluster.replicas or ())} if cluster else {},
                              "consumers": consumers}))
        finally:
            await nc.close()
    asyncio.run(main())


def _job_main(conf: str, job: str):
    from f2b_ext.system.fleet_agent import AgentConfig
    spec = json.loads(Path(job).read_text())
    cfg = AgentConfig.read(conf)
    if spec["op"] == "bus":
        return _bus_main(cfg, spec)
    _publish_main(cfg, spec)


def _publish_main(cfg, spec: dict):
    import asyncio
    import ssl
    import nats
    errors = []

    async def err_cb(exc):
        errors.append(str(exc))

    async def publisher(items, url):
        nc = await nats.connect(servers=[url] + [u for u in cfg.nats if u != url], dont_randomize=True,
                                user=cfg.user, password=cfg.password,
                                tls=ssl.create_default_context(cafile=cfg.ca) if cfg.ca else None,
                                error_cb=err_cb, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
        js = nc.jetstream(timeout=spec["timeout"])
        acked = 0

        async def one(subject, payload):
            nonlocal acked
            tries = 60 if spec["connections"] > 1 else 1     # the benchmark retries; the tests see refusals
            for attempt in range(tries):
                try:
                    await js.publish(subject, payload.encode(), headers={"Nats-Msg-Id": json.loads(payload)["id"]})
                    acked += 1
                    return
                except Exception as exc:
                    last = exc
                    await asyncio.sleep(0.5)
            errors.append(f"{type(last).__name__}: {last}")
        for i in range(0, len(items), 100):
            await asyncio.gather(*(one(s, p) for s, p in items[i:i + 100]))
        await nc.close()
        return acked

    async def main():
        groups: dict = {}
        for subject, payload in spec["items"]:
            groups.setdefault(subject if spec["connections"] > 1 else "", []).append((subject, payload))
        t0 = time.monotonic()
        urls = cfg.nats
        acked = await asyncio.gather(*(publisher(items, urls[i % len(urls)]) for i, items in enumerate(groups.values())))
        print(json.dumps({"acked": sum(acked), "errors": errors[:5], "seconds": time.monotonic() - t0}))
    asyncio.run(main())


if __name__ == "__main__":
    _job_main(sys.argv[1], sys.argv[2])

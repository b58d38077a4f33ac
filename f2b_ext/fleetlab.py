"""Adapter: a fleet lab on the real kernel (root only): three servers in network
namespaces, each with its own nats-server (clustered, TLS, per-server credentials from
`f2b-ext fleet init`), a real fail2ban-server (a local jail with nftset + fleet publish,
the fleet jail with nftset + fleet inbox) and a fleet agent.

How it works: a hub namespace holds a bridge; each server namespace has one veth to it
with an address of 198.18.0.0/24 (benchmark range). Nothing else is reachable, and all
traffic stays between these namespaces. Namespace names carry this process's pid; every
namespace and process is removed on close(), also when setup failed half way.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import fleetinit, nftset
from .f2b_server import IMPORT_ROOT as PROJECT_DIR, Fail2banServer
from .lab import sh, until

NAMES = ("a", "b", "c")
FLEET_JAIL, LOCAL_JAIL = "f2b-ext-fleet", "local"


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


class FleetLab:
    def __init__(self, names=NAMES, agent_settings: dict | None = None, per_server: dict | None = None):
        self.tag = f"f2bx{os.getpid()}"
        self.names = list(names)
        self.addr = {n: f"198.18.0.{i + 1}" for i, n in enumerate(self.names)}
        self.ns = {n: f"{self.tag}-{n}" for n in self.names}
        self.hub = f"{self.tag}-hub"
        self.dir = Path(tempfile.mkdtemp(prefix="f2bx-fleet-"))
        self.nats: dict = {}
        self.agents: dict = {}
        self.f2b: dict = {}
        self.agent_settings = dict(agent_settings or {})
        self.per_server = dict(per_server or {})
        self._made: list = []

    # -- setup --
    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def build(self):
        sh("ip", "netns", "add", self.hub)
        self._made.append(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, n in enumerate(self.names):
            ns = self.ns[n]
            sh("ip", "netns", "add", ns)
            self._made.append(ns)
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", self.hub)
            sh("ip", "-n", self.hub, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.addr[n]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        fleetinit.write(self.dir / "init", self.addr, str(self.dir / "store"))
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
            return all("Server is ready" in self.nats_log(n) for n in self.nats)
        if not until(ready, timeout, 0.2):
            raise RuntimeError("nats-server did not start: " + self.nats_log(self.names[0])[-2000:])

    def nats_log(self, n: str) -> str:
        path = self.dir / f"nats-{n}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_fail2ban(self, n: str):
        work = self.dir / f"f2b-{n}"
        srv = Fail2banServer(jail_conf(n, self.dir / f"spool-{n}.sqlite3"), netns=self.ns[n], workdir=work)
        (work / "kern.log.fleet").touch()
        srv.start(timeout=60, jail=FLEET_JAIL)
        self.f2b[n] = srv

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
        env = dict(os.environ, PYTHONPATH=str(PROJECT_DIR))
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

    def agent_log(self, n: str) -> str:
        path = self.dir / f"agent-{n}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def status(self, n: str) -> dict:
        try:
            return json.loads((self.dir / f"status-{n}.json").read_text())
        except (OSError, ValueError):
            return {}

    def fleet_cli(self, *args: str, ns: str | None = None) -> str:
        env = dict(os.environ, PYTHONPATH=str(PROJECT_DIR))
        cmd = [sys.executable, "-m", "f2b_ext", "fleet", *args]
        if ns or self.names:
            cmd = ["ip", "netns", "exec", ns or self.ns[self.names[0]], *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"f2b-ext fleet {' '.join(args)}: {r.stderr.strip()[-2000:]}")
        return r.stdout

    # -- what the kernel holds --
    def kernel_set(self, n: str, jail: str = FLEET_JAIL, family: int = 4) -> set[str]:
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
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._made.clear()
        if not os.environ.get("F2BX_KEEP_LAB"):
            shutil.rmtree(self.dir, ignore_errors=True)


# -- a raw publisher, run inside a server's namespace with that server's credentials --
def publish_as(lab: FleetLab, n: str, subject: str, payloads: list[bytes], timeout: float = 2,
               conf: Path | None = None, connections: int = 1) -> dict:
    """Publish `payloads` to `subject` (or to each payload's own subject when `subject`
    is None: f2bx.bans.<origin>) from server n's namespace, with n's credentials (as a
    compromised server would) or with `conf`'s, over `connections` connections, one
    per origin. Returns {"acked": k, "errors": [first few error texts], "seconds": t}."""
    src = lab.dir / f"publish-{time.monotonic_ns()}.json"
    items = [[subject or f"f2bx.bans.{json.loads(p)['origin']}", p.decode()] for p in payloads]
    src.write_text(json.dumps({"items": items, "timeout": timeout, "connections": connections}))
    env = dict(os.environ, PYTHONPATH=str(PROJECT_DIR))
    r = subprocess.run(["ip", "netns", "exec", lab.ns[n], sys.executable, "-m", "f2b_ext.fleetlab",
                        str(conf or lab.agent_conf(n)), str(src)], capture_output=True, text=True, env=env,
                       timeout=900)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.splitlines()[-1])


def _publish_main(conf: str, job: str):
    import asyncio
    import ssl
    import nats
    from .fleetagent import AgentConfig
    spec = json.loads(Path(job).read_text())
    cfg = AgentConfig.read(conf)
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
    _publish_main(sys.argv[1], sys.argv[2])

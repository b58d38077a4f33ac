"""Adapter: the fleet agent (`f2b-ext fleet run`), its own process next to fail2ban.

How it works
------------
Asyncio tasks around the pure core (f2b_ext.core.fleet), over one NATS connection:

- publish: spool rows not yet acknowledged go to JetStream under this server's subject
  `f2bx.bans.<server>`, each with its event id as `Nats-Msg-Id` (a re-send after a crash
  is dropped by the stream's duplicate window), then are marked in the spool. While the
  bus is down rows wait in the spool; nothing is lost.
- consume: a durable pull consumer named after this server reads every server's subject
  from where it left off. Each event is parsed strictly and decided by the Receiver
  (refusal table, caps, ledger) before anything is written. With `remote = kernel`
  (the default) accepted host bans and unbans go into the agent's own nftables sets
  (f2b_ext.system.fleet_sets), one transaction per batch, each element timing out when the
  ban ends; fail2ban's own ban path (about 3,700 bans/s) is left to local bans and
  escalations. With `remote = fail2ban` they go to the fleet jail in one socket call
  per batch (`set <fleet jail> action fleet remotebans`), unbans as `unbanip`. The
  touched ledger entries are saved (f2b_ext.system.fleet_ledger, SQLite beside the spool), and
  only then is the batch acknowledged (at least once; the ledger makes repeats no-ops,
  also after a restart). Every accepted host ban, and this server's own, feed the
  FleetEscalator.
- watch (remote = kernel): every `checkinterval` seconds the agent's sets are compared
  with its ledger and repaired (rules rebuilt, elements added, retimed or removed);
  at start the same comparison takes over what a killed agent left in the kernel.
- escalate (inside consume): every agent sees the same events, so each proposes the
  same fleet candidate; it is written to the decisions bucket with create (a
  compare-and-set on revision 0): one server wins, the others read its decision by key.
  Every agent applies a decision only if its own view supports it.
- protected: this server's own addresses and dependencies go to the protected bucket
  under its own key; every peer's are read back into the Receiver (direct gets by
  key, no consumer: they keep working while a cluster member is down).

A status file (JSON) says what the agent sees: servers, lag, spool depth, quarantined
servers, verdict counts. `f2b-ext fleet status` prints it.
"""
from __future__ import annotations

import asyncio
import configparser
import ipaddress
import json
import logging
import os
import random
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from f2b_ext.core import fleet, setsync
from f2b_ext.core.escalation import DEFAULT_FORGED_SCHEDULE, DEFAULT_FORGET, DEFAULT_SCHEDULE, Escalator, Ladder, Safety, Schedule, parse_duration
from f2b_ext.core.fleet import DECISIONS_BUCKET, PROTECTED_BUCKET, STREAM, EventError, FleetDecision, FleetEscalator, Policy, RateLimit, Receiver, parse_event, subject_for
from f2b_ext.errors import F2bExtError
from f2b_ext.system import fleet_ledger
from f2b_ext.system.fleet_ledger import LedgerStore
from f2b_ext.system.fleet_spool import DEFAULT_SPOOL, Spool

log = logging.getLogger("f2b-ext-fleet")
# seconds between writing a fleet decision and reading back which write stands: racing
# writes on one revision land within milliseconds of each other (nats-server#4320)
CAS_SETTLE = 0.5
DEFAULT_CONFIG = "/etc/f2b-ext/fleet.conf"
DEFAULT_STATUS = "/run/f2b-ext/fleet-status.json"


PUBLISHED_MAX = 16384                    # networks one server may publish (peers included)


class LocalDependencies:
    """What no fleet server may ever ban because this server depends on it, gathered the
    way subnet-escalate gathers it (f2b_ext.system.host.gather(), f2b_ext.core.dependencies): its
    own addresses, gateways, IPv6 routers, resolvers, NTP servers (names resolved),
    every jail's ignoreip (asked from fail2ban; names resolved) and the peers it talked
    to (answered connections it opened), remembered for `retention` in a file beside
    the spool (dependencies.PeerMemory), so a peer seen once stays protected across
    restarts. Published under this server's key of the protected bucket and protected
    here; peers last, newest first, if there are more than PUBLISHED_MAX."""

    def __init__(self, statefile: str, protect=(), ignoreip=None, retention: float | None = None):
        from f2b_ext.core import dependencies as deps
        self.path, self.protect, self.ignoreip = Path(statefile), list(protect), ignoreip
        try:
            text = self.path.read_text()
        except OSError:
            text = ""
        self.memory = deps.PeerMemory.loads(text, retention or deps.RETENTION)
        self.problems: list[str] = []

    def gather(self, now: float) -> list[str]:
        from f2b_ext.core import dependencies as deps
        from f2b_ext.system import host
        g = host.gather()
        problems = list(g.problems)
        if self.memory.observe(g.peers, now) + len(self.memory.expire(now)):
            try:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(self.memory.dumps())
                os.replace(tmp, self.path)
            except OSError as exc:
                problems.append(f"peers file {self.path}: {exc.strerror}")
        names = dict(g.names)
        found = list(g.found) + deps.dependencies("protect", self.protect)
        if self.ignoreip is not None:
            try:
                addrs, more = deps.split_names(self.ignoreip())
                found += deps.dependencies("ignoreip", addrs)
                names.update({n: "ignoreip" for n in more})
            except Exception as exc:             # fail2ban restarting: its lists come next round
                problems.append(f"fail2ban's ignoreip: {exc}")
        for name, source in names.items():
            try:
                found += deps.dependencies(source, host.resolve(name), name)
            except OSError as exc:
                problems.append(f"{name} does not resolve ({exc.strerror or exc})")
        self.problems = problems
        always = sorted({str(d.net) for d in found if d.always})
        peers = [a for a, _ in sorted(self.memory.seen.items(), key=lambda kv: -kv[1])]
        peers = [str(ipaddress.ip_network(p)) for p in peers if str(ipaddress.ip_network(p)) not in always]
        return always + peers[:max(0, PUBLISHED_MAX - len(always))]


# options of [fleet] that an earlier version read: now an error that says what replaced them
DROPPED = {"fleet_bantime": "fleet escalations follow `schedule` now (its first step is the first fleet ban, "
                            "later ones grow); remove fleet_bantime, or set schedule = <that time>"}


@dataclass
class AgentConfig:
    server: str
    nats: list
    peers: list = field(default_factory=list)
    user: str = ""
    password: str = ""
    ca: str = ""
    spool: str = DEFAULT_SPOOL
    status: str = DEFAULT_STATUS
    socket: str = "/var/run/fail2ban/fail2ban.sock"
    jail: str = "f2b-ext-fleet"
    action: str = "fleet"
    protect: list = field(default_factory=list)
    bogons: str = "default"
    replicas: int = 1
    min_servers: int = 2
    single_cap: float = Policy.single_cap
    forged_cap: float = Policy.forged_cap
    max_ban: float = Policy.max_ban
    rate: float = 100
    burst: float = 20000
    quarantine: float = 600
    hosts: int = 6
    window: float = 3600
    schedule: str = DEFAULT_SCHEDULE     # fleet escalations: escalation.Schedule's steps
    forgedschedule: str = DEFAULT_FORGED_SCHEDULE   # ... on evidence whose rule says "forged"
    forget: float = parse_duration(DEFAULT_FORGET, "forget")  # an older escalation starts anew
    batch: int = 256
    remote: str = "kernel"               # kernel: the agent's own sets; fail2ban: the fleet jail
    ledger: str = ""                     # default: fleet-ledger.sqlite3 beside the spool
    max_bans: int = 100_000              # remote bans the ledger (and the kernel set) may hold;
                                         # about 2.5 KB of agent memory each (the unit's MemoryMax)
    checkinterval: float = 10
    peersfile: str = ""                  # default: fleet-peers.json beside the spool
    refresh: float = 30                  # seconds between gathering this server's dependencies

    @classmethod
    def read(cls, path: str, **override) -> "AgentConfig":
        """The [fleet] section of `path`. An option the agent does not know is an error
        (a typo would otherwise leave a setting at its default unseen), and so is one a
        former version knew (DROPPED: the error names what replaced it): the agent is its
        own unit, so refusing to start stops no jail, and fail2ban keeps banning and
        spooling until the option is fixed."""
        cp = configparser.ConfigParser(interpolation=None)
        if not cp.read(path):
            raise fleet.EventError(f"{path}: cannot read the fleet configuration")
        s = dict(cp["fleet"]) if cp.has_section("fleet") else {}
        s.update({k: v for k, v in override.items() if v is not None})
        for name in s:
            if name in DROPPED:
                raise fleet.EventError(f"{path}: {name} was dropped: {DROPPED[name]}")
            if name not in cls.__annotations__:
                raise fleet.EventError(f"{path}: unknown option {name!r} in [fleet]")
        kw = {}
        for name, typ in cls.__annotations__.items():
            if name not in s:
                continue
            value = s[name]
            try:
                if name in ("nats", "protect", "peers"):
                    kw[name] = value.replace(",", " ").split() if isinstance(value, str) else list(value)
                elif name in ("single_cap", "forged_cap", "max_ban", "quarantine", "window", "forget", "refresh"):
                    kw[name] = float(parse_duration(value, name)) if isinstance(value, str) else float(value)
                elif typ in ("int", int):
                    kw[name] = int(value)
                elif typ in ("float", float):
                    kw[name] = float(value)
                else:
                    kw[name] = value
            except ValueError as exc:        # a duration's own message, else the number's
                what = str(exc) if isinstance(exc, F2bExtError) else f"{name}: {value!r} is not a number"
                raise fleet.EventError(f"{path}: {what}") from None
        if "server" not in kw or "nats" not in kw:
            raise fleet.EventError(f"{path}: [fleet] needs server and nats")
        if kw.get("remote", "kernel") not in ("kernel", "fail2ban"):
            raise fleet.EventError(f"{path}: remote: {kw['remote']!r} must be kernel or fail2ban")
        try:
            Schedule.parse(kw.get("schedule", cls.schedule), forged=kw.get("forgedschedule", cls.forgedschedule))
        except ValueError as exc:
            raise fleet.EventError(f"{path}: {exc}") from None
        fleet.subject_for(kw["server"])
        return cls(**kw)


class Fail2banInbox:
    """fail2ban's socket, spoken with fail2ban's own client (CSocket)."""

    def __init__(self, sock: str, jail: str, action: str):
        self.sock, self.jail, self.action = sock, jail, action

    def _ask(self, *command):
        from fail2ban.client.csocket import CSocket
        client = CSocket(self.sock, timeout=30)
        try:
            code, value = client.send(list(command))
        finally:
            client.close()
        if code != 0:
            raise RuntimeError(f"fail2ban refused {command[:4]}: {value}")
        return value

    def ban(self, items: list):
        return self._ask("set", self.jail, "action", self.action, "remotebans", json.dumps({"bans": items}))

    def ignoreip(self) -> list[str]:
        """Every jail's ignoreip (addresses, networks and names)."""
        status = dict(self._ask("status"))
        jails = [j.strip() for j in str(status.get("Jail list", "")).split(",") if j.strip()]
        return [str(entry) for jail in jails for entry in self._ask("get", jail, "ignoreip")]

    def unban(self, target: str):
        try:
            self._ask("set", self.jail, "unbanip", target)
        except RuntimeError as exc:
            if "not banned" not in str(exc).lower():
                raise


class Agent:
    def __init__(self, cfg: AgentConfig, inbox=None, sets=None):
        self.cfg = cfg
        self.subject = subject_for(cfg.server)
        self.spool = Spool(cfg.spool) if inbox is not False else None
        self.inbox = inbox or Fail2banInbox(cfg.socket, cfg.jail, cfg.action)
        self.dependencies = LocalDependencies(cfg.peersfile or str(Path(cfg.spool).with_name("fleet-peers.json")),
                                              cfg.protect, getattr(self.inbox, "ignoreip", None))
        policy = Policy.parse(cfg.server, list(cfg.protect), cfg.bogons,
                              single_cap=cfg.single_cap, forged_cap=cfg.forged_cap, max_ban=cfg.max_ban,
                              min_servers=cfg.min_servers)
        self.receiver = Receiver(policy, RateLimit(cfg.rate, cfg.burst, cfg.quarantine), cfg.max_bans)
        # before any event is decided: what this server depends on is protected here
        self.mine = self.dependencies.gather(time.time()) if inbox is not False else []
        self.receiver.set_local(self.mine)
        self.store = LedgerStore(cfg.ledger or fleet_ledger.default_path(cfg.spool)) if inbox is not False else None
        if self.store:
            self.store.load(self.receiver.ledger, time.time())
        self.sets = None
        if cfg.remote == "kernel" and inbox is not False:
            from f2b_ext.system.fleet_sets import AgentSets
            self.sets = sets or AgentSets()
        self._kernel_lock = asyncio.Lock()
        self._save_lock = asyncio.Lock()
        self.kernel_count = None                 # elements in the agent's sets at the last check
        self.kernel_checked = 0.0
        self.repairs = 0
        safety = Safety(protected=self.receiver.protected(), bogons=policy.bogons, maxprefix={4: 16, 6: 32})
        self.escalator = FleetEscalator(
            Escalator(Ladder.parse(f"24:{cfg.hosts} 16:3", f"64:{cfg.hosts} 48:3"), cfg.window, safety),
            cfg.min_servers)
        self.verdicts: Counter = Counter()
        self.seen: dict = {}                     # server -> (last event time, last lag)
        self.decisions: dict = {}                # prefix -> FleetDecision applied here
        self.schedule = Schedule.parse(cfg.schedule, forget=f"{int(cfg.forget)}s", forged=cfg.forgedschedule)
        self._rng = random.Random()
        self.decided_here = 0
        self.published = 0
        self.nc = self.js = None
        self._stop = asyncio.Event()

    # -- connection --
    async def connect(self, retry: bool = True):
        import nats
        opts = dict(servers=self.cfg.nats, name=f"f2b-ext-fleet-{self.cfg.server}",
                    max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=3,
                    allow_reconnect=True)
        if self.cfg.user:
            opts.update(user=self.cfg.user, password=self.cfg.password)
        if self.cfg.ca:
            ctx = ssl.create_default_context(cafile=self.cfg.ca)
            opts["tls"] = ctx
        while True:
            try:
                self.nc = await nats.connect(**opts)
                break
            except Exception as exc:         # the bus is down: the spool keeps everything
                if not retry:
                    raise
                log.warning("fleet: cannot reach NATS (%s); retrying", exc)
                await asyncio.sleep(1)
        self.js = self.nc.jetstream(timeout=5)

    async def ensure_streams(self) -> list[str]:
        """Create the stream and buckets that are missing (admin credentials; servers' own
        credentials may not be allowed to) and return their names. One that exists must
        have the settings this configuration gives it (fleet.bus_layout); if any differs,
        nothing is created and the error names every difference: a second create is
        harmless, a conflicting one changes nothing."""
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError
        layout = fleet.bus_layout(self.cfg.replicas, self.cfg.max_ban, self.cfg.forget)
        missing, conflicts = [], []
        for stream, wanted in layout.items():
            try:
                c = (await self.js.stream_info(stream)).config
            except NotFoundError:
                missing.append(stream)
                continue
            found = {"subjects": c.subjects, "max_age": c.max_age, "replicas": c.num_replicas or 1,
                     "duplicate_window": c.duplicate_window, "history": c.max_msgs_per_subject}
            conflicts += fleet.layout_conflicts(stream, wanted, found)
        if conflicts:
            raise EventError("the fleet's stream or buckets exist with other settings: " + "; ".join(conflicts)
                             + " (use a configuration that matches them)")
        for stream in missing:
            wanted = layout[stream]
            if stream == STREAM:
                await self.js.add_stream(StreamConfig(name=STREAM, subjects=list(wanted["subjects"]),
                                                      max_age=wanted["max_age"], num_replicas=wanted["replicas"],
                                                      duplicate_window=wanted["duplicate_window"]))
            else:
                await self.js.create_key_value(bucket=stream.removeprefix("KV_"), history=wanted["history"],
                                               replicas=wanted["replicas"], ttl=wanted["max_age"] or None)
        return missing

    async def run(self):
        if self.sets:
            await self.check("takeover")             # before the bus: what a killed agent left
        await self.connect()
        tasks = [asyncio.create_task(t) for t in (self._publish(), self._consume(), self._protected(),
                                                   self._status())]
        if self.sets and self.cfg.checkinterval > 0:
            tasks.append(asyncio.create_task(self._watch()))
        await self._stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.nc.close()

    def stop(self):
        self._stop.set()

    # -- publish --
    async def _publish(self):
        while True:
            rows = await asyncio.to_thread(self.spool.pending, 500)
            if not rows:
                await asyncio.sleep(0.02)
                continue
            done = []
            try:
                acks = await asyncio.gather(*(self._publish_one(data) for _, data in rows), return_exceptions=True)
            except Exception as exc:
                acks = [exc]
            for (seq, _), ack in zip(rows, acks):
                if isinstance(ack, BaseException):
                    break                        # keep order: retry from the first failure
                done.append(seq)
            if done:
                await asyncio.to_thread(self.spool.ack, done)
                self.published += len(done)
            if len(done) < len(rows):
                log.warning("fleet: publishing failed (%s); %d rows wait in the spool",
                            next(a for a in acks if isinstance(a, BaseException)), self.spool.depth())
                await asyncio.sleep(0.5)

    async def _publish_one(self, data: bytes):
        ev_id = json.loads(data)["id"]
        return await self.js.publish(self.subject, data, stream=STREAM, headers={"Nats-Msg-Id": ev_id})

    # -- consume --
    async def _consume(self):
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        import nats.errors
        sub = None
        while sub is None:
            try:
                sub = await self.js.pull_subscribe(
                    fleet.SUBJECT_PREFIX + ">", durable=self.cfg.server, stream=STREAM,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                                          ack_wait=30, max_ack_pending=20000))
            except Exception as exc:
                log.warning("fleet: cannot bind the consumer (%s); retrying", exc)
                await asyncio.sleep(1)
        while True:
            try:
                msgs = await sub.fetch(self.cfg.batch, timeout=1)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except Exception as exc:
                log.warning("fleet: fetch failed (%s)", exc)
                await asyncio.sleep(0.5)
                continue
            undo: list = []
            try:
                await self._handle(msgs, undo)
            except Exception as exc:             # fail2ban did not take the batch: redeliver
                self._undo(undo)
                log.warning("fleet: batch of %d not applied (%s); it will be redelivered", len(msgs), exc)
                for m in msgs:
                    await m.nak(delay=1)
                await asyncio.sleep(1)
                continue
            for m in msgs:
                await m.ack()

    def _undo(self, undo: list):
        """Put the ledger back as it was before a batch fail2ban did not take, so its
        redelivery is applied, not taken for a duplicate."""
        ledger = self.receiver.ledger
        for target, reports, applied, about in reversed(undo):
            for table, old in ((ledger.reports, reports), (ledger.applied, applied), (ledger.about, about)):
                if old is None:
                    table.pop(target, None)
                else:
                    table[target] = old

    async def _handle(self, msgs, undo: list):
        now = time.time()
        ledger = self.receiver.ledger
        bans, unbans, candidates = [], [], []
        adds, retimes, removes = {}, {}, set()
        for m in msgs:
            try:
                ev = parse_event(m.data, m.subject, now)
            except EventError as exc:
                self.verdicts["malformed"] += 1
                log.warning("fleet: refused an event on %s: %s", m.subject[:80], exc)
                continue
            self.seen[ev.origin] = (ev.at, now - ev.at)
            old, about = ledger.reports.get(ev.target), ledger.about.get(ev.target)
            was = ledger.applied.get(ev.target)
            undo.append((ev.target, dict(old) if old is not None else None, was,
                         dict(about) if about is not None else None))
            d = self.receiver.decide(ev, now)
            self.verdicts[d.verdict] += 1
            for q in self.receiver.ratelimit.newly_quarantined:
                log.warning("fleet: quarantined %s for %ds: it sent more than %s events/s",
                            q, self.cfg.quarantine, self.cfg.rate)
            self.receiver.ratelimit.newly_quarantined.clear()
            if d.verdict == "apply":
                if self.sets:
                    (retimes if was is not None and was > now else adds)[ev.target] = d.until
                else:
                    bans.append([ev.address, d.until, ev.origin])
            elif d.verdict == "unban":
                if self.sets:
                    removes.add(ev.target)
                    adds.pop(ev.target, None)
                    retimes.pop(ev.target, None)
                else:
                    unbans.append(ev.address)
            elif d.verdict == "refuse" and d.reason != "our own event":
                log.warning("fleet: refused %s %s from %s: %s", ev.kind, ev.address, ev.origin, d.reason)
            if d.verdict in ("apply", "duplicate") or (d.reason == "our own event" and ev.kind == "ban"):
                candidates += self.escalator.observe(ev)
        for net in list(adds) + list(retimes):   # lifted, then banned again in one batch
            removes.discard(net)
        if adds or retimes or removes:
            await self._kernel_write(adds, retimes, removes, now)
        if bans:
            await asyncio.to_thread(self.inbox.ban, bans)
        for target in unbans:
            await asyncio.to_thread(self.inbox.unban, target)
        await self._save()
        for cand in candidates:
            await self._decide(cand, now)

    # -- the agent's kernel sets --
    async def _kernel_write(self, adds: dict, retimes: dict, removes: set, now: float):
        """One transaction for the batch; if it fails, rebuild and resynchronise
        everything the ledger lists (which includes the batch); if that fails too, the
        caller undoes the batch and it is redelivered."""
        from f2b_ext.system.fleet_sets import KernelError
        add = [(n, u - now) for n, u in adds.items()]
        retime = [(n, u - now) for n, u in retimes.items()]
        async with self._kernel_lock:
            try:
                await asyncio.to_thread(self.sets.write, add, retime, sorted(removes, key=str))
                return
            except KernelError as exc:
                log.warning("fleet: writing %d remote ban(s) to the kernel failed (%s); rebuilding",
                            len(add) + len(retime) + len(removes), exc)
        await self.check("write failed")

    async def check(self, why: str = ""):
        """The invariant: the agent's sets hold exactly what its ledger lists, with the
        same end (rules rebuilt first if they are missing)."""
        async with self._kernel_lock:
            if not await asyncio.to_thread(self.sets.intact):
                await asyncio.to_thread(self.sets.setup)
                if why != "takeover":
                    log.warning("fleet: the agent's sets or rules were missing; rebuilt")
            held = await asyncio.to_thread(self.sets.held)
            now = time.time()
            self.receiver.ledger.expire(now)
            listed = self.receiver.ledger.listed(now)       # read after the kernel's listing
            plan = setsync.plan(listed, held, tolerance=3)
            if plan:
                await asyncio.to_thread(self.sets.write, plan.add, plan.retime, plan.remove)
                self.repairs += len(plan.add) + len(plan.retime) + len(plan.remove)
                log.warning("fleet: the kernel differed from the agent's list (%s): %s", why or "check",
                            plan.summary())
            self.kernel_count = len(held) + len(plan.add) - len(plan.remove)
            self.kernel_checked = now
        await self._save()

    async def _save(self):
        """The touched ledger entries to disk, one save at a time, in the order taken."""
        if not self.store:
            return
        async with self._save_lock:
            if self.receiver.ledger.touched:
                await asyncio.to_thread(self.store.save, self.store.snapshot(self.receiver.ledger))

    async def _watch(self):
        while True:
            await asyncio.sleep(self.cfg.checkinterval)
            try:
                await self.check()
            except Exception as exc:              # keep watching; the next round may succeed
                log.warning("fleet: kernel check failed: %s", exc)

    # -- escalation decided once --
    async def _decide(self, cand, now: float):
        """Write the candidate's decision once (create, or update on the revision of the
        ended one: compare-and-set either way), or read the one another agent wrote."""
        import nats.js.errors
        held = self.decisions.get(cand.net)
        if held is not None and held.until > now:
            return
        kv = await self.js.key_value(DECISIONS_BUCKET)
        key = fleet.decision_key(cand.net)
        try:
            entry = await kv.get(key)
            previous, revision = FleetDecision.parse(entry.value), entry.revision
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            previous, revision = None, 0
        decision = fleet.next_decision(previous, cand, self.cfg.server, now, self.schedule, self._rng.random())
        if decision is None:
            decision = previous                  # still in force: decided by another agent
        else:
            try:
                if revision:
                    written = await kv.update(key, decision.to_json(), last=revision)
                else:
                    written = await kv.create(key, decision.to_json())
                # nats-server before 2.9.21 (Debian 12 ships 2.9.10) checks the expected
                # revision before the write's Raft proposal, not in it, so two agents' writes
                # on the same revision of a replicated bucket can both be accepted
                # (nats-server#4320). The later write stands: an agent whose write was
                # overwritten meanwhile adopts the one that stands instead of its own.
                await asyncio.sleep(CAS_SETTLE)
                standing = await kv.get(key)
                if standing.revision != written:
                    decision = FleetDecision.parse(standing.value)
                    log.info("fleet: the decision on %s written at revision %d was overwritten at %d "
                             "(nats-server#4320); the standing one applies", cand.net, written, standing.revision)
                else:
                    self.decided_here += 1
                    log.warning("fleet: decided fleet ban #%d of %s until %.0f (reporters %s)", decision.count,
                                cand.net, decision.until, ", ".join(cand.reporters))
            except nats.js.errors.KeyWrongLastSequenceError:
                decision = FleetDecision.parse((await kv.get(key)).value)
        await self._apply_decision(decision, now)

    async def _apply_decision(self, d: FleetDecision, now: float):
        held = self.decisions.get(d.net)
        until = fleet.decision_until(d, self.schedule)
        if (held is not None and held.until > now) or until <= now:
            return
        why = self.escalator.supports(d.net, now)
        if why is not None:
            self.verdicts["decision-unsupported"] += 1
            return                               # maybe later, once our view caught up
        self.decisions[d.net] = d
        self.escalator.mark_banned(d.net, until, now)
        await asyncio.to_thread(self.inbox.ban, [[str(d.net), until, d.decided_by]])
        self.verdicts["fleet-escalation"] += 1
        log.warning("fleet: banned %s until %.0f (fleet decision #%d by %s)", d.net, until, d.count, d.decided_by)

    # -- protected addresses --
    async def _protected(self):
        """Publish this server's dependencies (gathered every `refresh` s) under its own
        key; read every other server's (up to PUBLISHED_MAX each) into the Receiver; the
        fleet escalator never proposes a prefix covering any of them."""
        import nats.js.errors
        gathered = time.monotonic()
        while True:
            if time.monotonic() - gathered >= self.cfg.refresh:
                gathered = time.monotonic()
                try:
                    self.mine = await asyncio.to_thread(self.dependencies.gather, time.time())
                    self.receiver.set_local(self.mine)
                except Exception as exc:         # keep the last known list
                    log.warning("fleet: gathering this server's dependencies failed: %s", exc)
                for problem in self.dependencies.problems:
                    log.warning("fleet: dependencies: %s", problem)
            try:
                kv = await self.js.key_value(PROTECTED_BUCKET)
                await kv.put(self.cfg.server, json.dumps(self.mine).encode())
                for key in self.cfg.peers or await kv.keys():
                    if key == self.cfg.server or not fleet.SERVER_RE.fullmatch(key):
                        continue
                    try:
                        entry = await kv.get(key)
                    except nats.js.errors.KeyNotFoundError:
                        continue              # that server's agent has not started yet
                    try:
                        nets = json.loads(entry.value)
                        assert isinstance(nets, list)
                    except Exception:
                        log.warning("fleet: protected list of %s unreadable", key)
                        continue
                    if len(nets) > PUBLISHED_MAX:
                        log.warning("fleet: %s published %d protected networks; the first %d are used",
                                    key, len(nets), PUBLISHED_MAX)
                    for why in self.receiver.set_protected(key, [str(n) for n in nets[:PUBLISHED_MAX]]):
                        log.warning("fleet: %s's protected entry ignored: %s", key, why)
                safety = self.escalator.escalator.safety
                self.escalator.escalator.set_safety(Safety(protected=self.receiver.protected(),
                                                           bogons=safety.bogons, maxprefix=safety.maxprefix))
            except Exception as exc:
                log.warning("fleet: protected bucket: %s", exc)
            await asyncio.sleep(5)

    # -- status --
    def status(self) -> dict:
        now = time.time()
        return {"server": self.cfg.server, "time": now, "connected": bool(self.nc and self.nc.is_connected),
                "spool_depth": self.spool.depth(), "published": self.published,
                "servers": {s: {"last_event": t, "lag": round(lag, 3)} for s, (t, lag) in sorted(self.seen.items())},
                "quarantined": self.receiver.ratelimit.quarantined(now),
                "verdicts": dict(self.verdicts), "fleet_decisions": {str(n): d.until for n, d in self.decisions.items() if d.until > now},
                "fleet_escalations": {str(n): d.count for n, d in self.decisions.items()},
                "decided_here": self.decided_here, "remote": self.cfg.remote,
                "remote_bans": len(self.receiver.ledger.listed(now)), "kernel_bans": self.kernel_count,
                "kernel_checked": self.kernel_checked, "repairs": self.repairs,
                "ledger": str(self.store.path) if self.store else None,
                "protected_by": {s: [str(n) for n in nets] for s, nets in self.receiver.fleet_protected.items()},
                "protected_here": len(self.mine), "peers_remembered": len(self.dependencies.memory.seen)}

    async def _status(self):
        path = Path(self.cfg.status)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=1))
            os.replace(tmp, path)
            await asyncio.sleep(1)


def create_streams(cfg: AgentConfig) -> list[str]:
    """Create the stream and buckets that are missing, with the administrator's
    credential; the names of those it created (Agent.ensure_streams)."""
    # asyncio's notice as TLS closes ("returning true from eof_received() ...") is no
    # line for the person who ran the command
    logging.getLogger("asyncio").setLevel(logging.ERROR)

    async def main():
        agent = Agent(cfg, inbox=False)
        await agent.connect(retry=False)
        try:
            return await agent.ensure_streams()
        finally:
            await agent.nc.close()
    return asyncio.run(main())


def run(cfg: AgentConfig):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    async def main():
        agent = Agent(cfg)
        import signal
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        log.warning("fleet: agent %s starting (spool %s, %d rows pending)", cfg.server, cfg.spool, agent.spool.depth())
        await agent.run()

    asyncio.run(main())

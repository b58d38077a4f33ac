"""Adapter: the fleet agent's ledger on disk, a SQLite file beside the spool, so that
idempotency survives an agent restart: a redelivered event is still a duplicate, an
admin's unban still finds the report it lifts, and the kernel sets are taken over with
exactly what was listed before a kill -9.

How it works: one row per (target, origin) report, with its capped end and where it
came from (jail, evidence kind, time), and one row per target held (`until`). The
agent saves the targets a batch touched (f2b_ext.core.fleet.Ledger.touched) in one
transaction before it acknowledges the batch; `load()` deletes what ended and fills a
Ledger. The ledger itself is bounded (Ledger.limit); rows of ended bans are deleted
at load and by `prune()`.
"""
from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS applied (target TEXT PRIMARY KEY, until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS reports (target TEXT NOT NULL, origin TEXT NOT NULL, until REAL NOT NULL,
    jail TEXT NOT NULL, evidence TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (target, origin));
"""


def default_path(spool: str) -> str:
    """Beside the spool, named after it (two agents' spools in one directory never share
    a ledger): fleet-spool.sqlite3 -> fleet-ledger.sqlite3, x.db -> x-ledger.sqlite3."""
    path = Path(spool)
    stem = path.name.split(".")[0]
    return str(path.with_name((stem.replace("spool", "ledger") if "spool" in stem else f"{stem}-ledger") + ".sqlite3"))


class LedgerStore:
    def __init__(self, path: str, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)

    def load(self, ledger, now: float) -> int:
        """Fill `ledger` with what still holds at `now`; returns how many targets."""
        self.prune(now)
        for target, until in self.db.execute("SELECT target, until FROM applied"):
            ledger.applied[ipaddress.ip_network(target)] = until
        for target, origin, until, jail, evidence, at in self.db.execute(
                "SELECT target, origin, until, jail, evidence, at FROM reports"):
            net = ipaddress.ip_network(target)
            if net in ledger.applied:
                ledger.reports.setdefault(net, {})[origin] = until
                ledger.about.setdefault(net, {})[origin] = (jail, evidence, at)
        ledger.touched.clear()
        return len(ledger.applied)

    @staticmethod
    def snapshot(ledger) -> list:
        """The touched targets' rows, taken on the agent's loop (then written in a thread)."""
        rows = []
        for target in ledger.touched:
            until = ledger.applied.get(target)
            reports = [(o, e, *ledger.about.get(target, {}).get(o, ("?", "?", 0.0)))
                       for o, e in ledger.reports.get(target, {}).items()]
            rows.append((str(target), until, reports))
        ledger.touched.clear()
        return rows

    def save(self, rows: list):
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM reports WHERE target = ?", [(t,) for t, _, _ in rows])
            self.db.executemany("DELETE FROM applied WHERE target = ?", [(t,) for t, u, _ in rows if u is None])
            self.db.executemany("INSERT OR REPLACE INTO applied(target, until) VALUES (?, ?)",
                                [(t, u) for t, u, _ in rows if u is not None])
            self.db.executemany("INSERT INTO reports(target, origin, until, jail, evidence, at) VALUES (?, ?, ?, ?, ?, ?)",
                                [(t, *r) for t, u, reports in rows if u is not None for r in reports])

    def prune(self, now: float):
        with self.db:
            self.db.execute("DELETE FROM applied WHERE until <= ?", (now,))
            self.db.execute("DELETE FROM reports WHERE target NOT IN (SELECT target FROM applied)")

    def bans(self, now: float) -> list[tuple]:
        """[(target, until, [(origin, until, jail, evidence, at)])] held now, soonest end first."""
        reports: dict = {}
        for target, origin, until, jail, evidence, at in self.db.execute(
                "SELECT target, origin, until, jail, evidence, at FROM reports WHERE until > ? ORDER BY origin", (now,)):
            reports.setdefault(target, []).append((origin, until, jail, evidence, at))
        return [(t, u, reports.get(t, [])) for t, u in
                self.db.execute("SELECT target, until FROM applied WHERE until > ? ORDER BY until, target", (now,))]

    def close(self):
        self.db.close()

"""Adapter: the fleet's local spool, an append-only SQLite file shared by the fleet
action (inside fail2ban-server: appends) and the fleet agent (publishes, then marks).

How it works: fail2ban's ban thread only appends one row per event in its own
transaction and never touches the network, so a dead bus costs it nothing and loses
nothing. WAL with synchronous=NORMAL: a committed row survives a kill -9 of fail2ban or
of the agent (it is in the WAL file when append() returns); only a power loss may take
the last rows, as it takes fail2ban's own database (synchronous=OFF) and the kernel's
sets. synchronous=FULL waited for one fsync per ban (about 5 ms here) and held
fail2ban's ban thread to about 200 bans/s. The agent reads
the rows not yet acknowledged by JetStream, oldest first, publishes them with the
event's id as `Nats-Msg-Id` (JetStream drops a repeat within its duplicate window), and
marks them acknowledged. Acknowledged rows older than a day are deleted. Standard
library only: fail2ban's Python imports it.
"""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

DEFAULT_SPOOL = "/var/lib/f2b-ext/fleet-spool.sqlite3"
_SCHEMA = """CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL, added REAL NOT NULL,
    acked REAL)"""


class Spool:
    def __init__(self, path: str | Path = DEFAULT_SPOOL):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self.db.execute("CREATE INDEX IF NOT EXISTS pending ON spool(acked, seq)")

    def append(self, data: bytes):
        self.append_many([data])

    def append_many(self, items):
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT INTO spool(data, added) VALUES (?, ?)",
                                [(bytes(d), time.time()) for d in items])

    def pending(self, limit: int = 500) -> list[tuple[int, bytes]]:
        return [(s, bytes(d)) for s, d in self.db.execute(
            "SELECT seq, data FROM spool WHERE acked IS NULL ORDER BY seq LIMIT ?", (limit,))]

    def ack(self, seqs):
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("UPDATE spool SET acked = ? WHERE seq = ?", [(now, s) for s in seqs])
            self.db.execute("DELETE FROM spool WHERE acked IS NOT NULL AND acked < ?", (now - 86400,))

    def depth(self) -> int:
        return self.db.execute("SELECT count(*) FROM spool WHERE acked IS NULL").fetchone()[0]

    def total(self) -> int:
        return self.db.execute("SELECT count(*) FROM spool").fetchone()[0]

    def close(self):
        self.db.close()

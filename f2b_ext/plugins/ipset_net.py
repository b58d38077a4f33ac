"""Adapter: the `ipset-net` fail2ban action: bans into ipset hash:net sets matched by
iptables rules, for hosts whose firewall is iptables (legacy or nft).

How it works: every batch of bans is one `ipset -exist restore` (one process per batch,
not per ban); rules are checked with `iptables -C` before they are inserted, so start
is idempotent and stop removes exactly its own. When and what to write (batching,
repair, watchdog, unban-all) is f2b_ext.plugins.set_action's business; the commands are
f2b_ext.core.ipset's.
"""
from __future__ import annotations

import subprocess

from f2b_ext.core import ipset
from f2b_ext.core import nftevents
from f2b_ext.plugins.set_action import BackendError, SetAction


class IpsetNetAction(SetAction):
    BACKEND = "ipset-net"
    validate = staticmethod(ipset.validate)

    @staticmethod
    def _run(*args: str, input: str | None = None) -> tuple[int, str]:
        try:
            proc = subprocess.run(args, input=input, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 1, str(exc)
        return proc.returncode, proc.stderr.strip()

    def _event_scope(self) -> nftevents.Scope:
        """iptables-nft keeps its rules in nf_tables tables `ip filter` / `ip6 filter`: a
        deleted rule or a flushed chain there is heard (iptables-legacy and `ipset flush`
        send nothing: those wait for the watchdog)."""
        tables = frozenset((nftevents.NFPROTO[fam], "filter") for fam in ("ip", "ip6"))
        return nftevents.Scope(tables, lambda chain: chain in {c for c, _ in ipset.CHAINS[self.direction]})

    def _rules(self):
        return ipset.rules(self._jailname, self.direction, self.blocktype)

    # -- the backend --
    def _probe(self):
        rc, err = self._run("ipset", "list", "-n")
        if rc != 0:
            raise BackendError(f"ipset: {err or rc}")

    def _stale_rules(self):
        """Rules of another direction or blocktype a previous run left (kept across a
        restart)."""
        mine = {tuple(r) for _, r in self._rules()}
        for direction in ipset.CHAINS:
            for blocktype in ipset.TARGETS:
                for tool, rule in ipset.rules(self._jailname, direction, blocktype):
                    if tuple(rule) not in mine:
                        yield tool, rule

    def _setup(self):
        rc, err = self._run("ipset", "-exist", "restore", input=ipset.create_script(self._jailname))
        if rc != 0:
            raise BackendError(f"ipset: {err}")
        for tool, rule in self._stale_rules():
            while self._run(tool, "-w", "-C", *rule)[0] == 0:
                if self._run(tool, "-w", "-D", *rule)[0] != 0:
                    break
        for tool, rule in reversed(self._rules()):     # inserted at 1: keep their order
            if self._run(tool, "-w", "-C", *rule)[0] != 0:
                rc, err = self._run(tool, "-w", "-I", rule[0], "1", *rule[1:])
                if rc != 0:
                    raise BackendError(f"{tool}: {err}")

    def _remove_rules(self):
        for tool, rule in self._rules():
            while self._run(tool, "-w", "-C", *rule)[0] == 0:
                if self._run(tool, "-w", "-D", *rule)[0] != 0:
                    break

    def _teardown(self):
        self._remove_rules()
        for fam in (4, 6):
            self._run("ipset", "destroy", ipset.set_name(self._jailname, fam))

    def _write(self, entries) -> bool:
        rc, err = self._run("ipset", "-exist", "restore", input=ipset.add_script(self._jailname, entries))
        if rc != 0:
            self._logSys.warning("ipset-net: %s", err.splitlines()[0] if err else rc)
        return rc == 0

    def _delete(self, net):
        rc, err = self._run("ipset", *ipset.delete_args(self._jailname, net))
        if rc != 0 and "does not exist" not in err:
            self._logSys.warning("ipset-net: unban %s: %s", net, err)

    def _flush_sets(self) -> bool:
        results = [self._run("ipset", "flush", ipset.set_name(self._jailname, fam)) for fam in (4, 6)]
        for rc, err in results:
            if rc != 0:
                self._logSys.warning("ipset-net: flush: %s", err)
        return all(rc == 0 for rc, _ in results)

    def _as_kernel(self, left):
        return left if left is None else min(left, ipset.MAX_TIMEOUT)

    def _held(self) -> dict:
        held = {}
        for fam in (4, 6):
            try:
                proc = subprocess.run(["ipset", "save", ipset.set_name(self._jailname, fam)],
                                      capture_output=True, text=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise BackendError(f"ipset save: {exc}") from None
            if proc.returncode == 0:
                held.update(ipset.parse_save(proc.stdout))
        return held

    def _intact(self) -> bool:
        """Both sets exist and every rule is in place."""
        if any(self._run("ipset", "list", "-n", ipset.set_name(self._jailname, fam))[0] for fam in (4, 6)):
            return False
        return all(self._run(tool, "-w", "-C", *rule)[0] == 0 for tool, rule in self._rules())

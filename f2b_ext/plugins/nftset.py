"""Adapter: the `nftset` fail2ban action: bans into nftables sets, in-process.

How it works: libnftables (Debian's python3-nftables) runs in fail2ban-server's own
process and network namespace: no process per ban. When and what to write (batching,
the invariant, repair, watchdog, unban-all) is f2b_ext.plugins.set_action's business; the
nft text, and reading the kernel's elements from its JSON, f2b_ext.core.nftset's. This module
runs that text through libnftables (under f2b_ext.system.libnftables' lock).
"""
from __future__ import annotations

import json

from f2b_ext.core import nftevents
from f2b_ext.core import nftset
from f2b_ext.plugins.set_action import BackendError, SetAction
from f2b_ext.system.libnftables import LIBNFTABLES
from f2b_ext.core.nftset import elements, jail_elements  # noqa: F401  (kept for importers)

class NftSetAction(SetAction):
    BACKEND = "nftset"
    validate = staticmethod(nftset.validate)

    def __init__(self, jail, name, **params):
        self._nft = None                    # before the base's __init__, which may start()
        self._prefix_sets: set[str] = set()
        super().__init__(jail, name, **params)

    # -- nft --
    def _cmd(self, script: str, output: str = "text") -> tuple[int, str, str]:
        """Run nft text; `output`: text, json, or terse (json without set elements)."""
        if self._nft is None:
            try:
                from nftables import Nftables
            except ImportError as exc:
                raise BackendError(f"python3-nftables is not installed ({exc})") from None
            self._nft = {"text": Nftables(), "json": Nftables(), "terse": Nftables()}
            for kind in ("json", "terse"):
                self._nft[kind].set_json_output(True)
            self._nft["terse"].set_terse_output(True)
        if not script.startswith("list "):
            self._note_writer()
        with LIBNFTABLES:
            rc, out, err = self._nft[output].cmd(script)
        return rc, out, err.strip()

    def _event_scope(self) -> nftevents.Scope:
        """The suite's table; in it the jail's own chains and sets (by their current names)."""
        key = nftset.jail_key(self._jailname)

        def own(name: str) -> bool:
            return (name in self._set_names() or nftset.is_prefix_set_of(self._jailname, name)
                    or name in {f"{key}_{hook}" for hook, _ in nftset.HOOKS[self.direction]})
        family, table = nftset.TABLE.split()
        return nftevents.Scope(frozenset({(nftevents.NFPROTO[family], table)}), own)

    def _set_names(self) -> set[str]:
        return {f"{nftset.jail_key(self._jailname)}_h{f}" for f in (4, 6)} | self._prefix_sets

    # -- the backend --
    def _probe(self):
        rc, _, err = self._cmd("list tables")
        if rc != 0:
            raise BackendError(f"nft list tables: {err or rc}")

    def _adopt(self):
        """The prefix sets a previous run left (kill -9, restart): they get their rules
        in setup's transaction."""
        rc, out, _ = self._cmd(f"list sets table {nftset.TABLE}", output="terse")
        if rc == 0:
            for item in json.loads(out).get("nftables", ()):
                name = item.get("set", {}).get("name", "")
                if nftset.is_prefix_set_of(self._jailname, name):
                    self._prefix_sets.add(name)

    def _setup(self):
        rc, _, err = self._cmd(nftset.setup_script(self._jailname, self.direction, self.blocktype, self._prefix_sets))
        if rc != 0:
            raise BackendError(f"nftables setup failed: {err}")

    def _remove_rules(self):
        self._cmd(nftset.teardown_script(self._jailname, self.direction))

    def _teardown(self):
        self._cmd(nftset.teardown_script(self._jailname, self.direction, self._set_names()))
        rc, out, _ = self._cmd(f"list table {nftset.TABLE}")
        if rc == 0 and "chain " not in out and "set " not in out:
            self._cmd(f"delete table {nftset.TABLE}")

    def _new_sets(self, entries) -> list[str]:
        script = []
        for net, _ in entries:
            name = nftset.set_name(self._jailname, net)
            if nftset.is_prefix(net) and name not in self._prefix_sets:
                self._prefix_sets.add(name)
                script.append(nftset.new_prefix_set_script(self._jailname, name, self.direction, self.blocktype))
        return script

    def _write(self, entries) -> bool:
        script = self._new_sets(entries) + [nftset.add_elements_script(self._jailname, entries)]
        rc, _, err = self._cmd("\n".join(script))
        if rc != 0:
            self._logSys.warning("nftset: %s", err.splitlines()[0] if err else rc)
        return rc == 0

    def _replace(self, entries) -> bool:
        """New timeouts: delete and add in one transaction (no moment without the ban);
        an element that is gone meanwhile is simply added."""
        held = self._held()
        deletes = [nftset.delete_element_script(self._jailname, net) for net, _ in entries if net in held]
        script = self._new_sets(entries) + deletes + [nftset.add_elements_script(self._jailname, entries)]
        rc, _, err = self._cmd("\n".join(script))
        if rc != 0:
            self._logSys.warning("nftset: retime: %s", err.splitlines()[0] if err else rc)
        return rc == 0

    def _delete(self, net):
        rc, _, err = self._cmd(nftset.delete_element_script(self._jailname, str(net)))
        if rc != 0 and "No such file or directory" not in err:
            self._logSys.warning("nftset: unban %s: %s", net, err)

    def _flush_sets(self) -> bool:
        rc, _, err = self._cmd("\n".join(f"flush set {nftset.TABLE} {name}" for name in sorted(self._set_names())))
        if rc != 0:
            self._logSys.warning("nftset: flush: %s", err)
        return rc == 0

    def _intact(self) -> bool:
        """Every chain of the jail holds the rule of every set (a `flush ruleset`
        removes the table, a `flush chain` the rules)."""
        key = nftset.jail_key(self._jailname)
        for hook, _ in nftset.HOOKS[self.direction]:
            rc, out, _ = self._cmd(f"list chain {nftset.TABLE} {key}_{hook}")
            if rc != 0 or any(f"@{name} " not in out for name in self._set_names()):
                return False
        return True

    def _held(self) -> dict:
        held = {}
        for name in sorted(self._set_names()):
            rc, out, err = self._cmd(f"list set {nftset.TABLE} {name}", output="json")
            if rc == 0:
                held.update(elements(json.loads(out)))
        return held

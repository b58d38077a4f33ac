"""Adapter: the `nftset` fail2ban action: bans into nftables sets, in-process.

How it works: libnftables (Debian's python3-nftables) runs in fail2ban-server's own
process and network namespace: no process per ban. When and what to write (batching,
repair, watchdog, unban-all) is f2b_ext.f2b_setaction's business; the nft text is
f2b_ext.nftset's. This module runs that text and reads the answers.
"""
from __future__ import annotations

from . import nftset
from .f2b_setaction import BackendError, SetAction


class NftSetAction(SetAction):
    BACKEND = "nftset"
    validate = staticmethod(nftset.validate)

    def __init__(self, jail, name, **params):
        super().__init__(jail, name, **params)
        self._nft = None
        self._prefix_sets: set[str] = set()

    # -- nft --
    def _cmd(self, script: str) -> tuple[int, str, str]:
        if self._nft is None:
            from nftables import Nftables
            self._nft = Nftables()
        rc, out, err = self._nft.cmd(script)
        return rc, out, err.strip()

    def _set_names(self) -> set[str]:
        return {f"{nftset.jail_key(self._jailname)}_h{f}" for f in (4, 6)} | self._prefix_sets

    # -- the backend --
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

    def _write(self, entries) -> bool:
        script = []
        for net, _ in entries:
            name = nftset.set_name(self._jailname, net)
            if nftset.is_prefix(net) and name not in self._prefix_sets:
                self._prefix_sets.add(name)
                script.append(nftset.new_prefix_set_script(self._jailname, name, self.direction, self.blocktype))
        script.append(nftset.add_elements_script(self._jailname, entries))
        rc, _, err = self._cmd("\n".join(script))
        if rc != 0:
            self._logSys.warning("nftset: %s", err.splitlines()[0] if err else rc)
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
        """The jail's first chain still holds its host-set rule (a `flush ruleset`
        removes the table, a `flush chain` the rules)."""
        key = nftset.jail_key(self._jailname)
        hook = nftset.HOOKS[self.direction][0][0]
        rc, out, _ = self._cmd(f"list chain {nftset.TABLE} {key}_{hook}")
        return rc == 0 and f"@{key}_h4 " in out

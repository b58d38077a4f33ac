"""Adapter: the fleet agent's own nftables sets, which hold the remote host bans the
agent lists (its ledger), written in batches without fail2ban.

How it works: the sets follow f2b_ext.core.nftset's conventions under the name `fleet-agent`
(table `inet f2b_ext`, sets `fleet_agent_h4`/`_h6` with `flags timeout`, chains
`fleet_agent_input`/`_forward` dropping what they match by source); the nft text comes
from f2b_ext.core.nftset, the kernel's answers are read by f2b_ext.core.nftset.elements(),
and every libnftables call goes through f2b_ext.system.libnftables' lock. Each element's timeout is
the ban's remaining time, so the kernel lifts it on time even if the agent is dead.

`write()` runs one transaction per batch: new bans added, changed ones retimed, lifted
ones removed (the retime and remove texts never fail on an element that is missing).
`sync(listed)` makes the kernel hold exactly `listed` ({network: seconds left}, the
agent's ledger) with f2b_ext.core.setsync.plan(): at start (takeover after a kill -9: the
elements are still there, the ledger was saved) and from the agent's watchdog (a
`nft flush set`, `flush ruleset`, an element deleted by hand). `setup()` is idempotent
and keeps existing elements.
"""
from __future__ import annotations

import json

from f2b_ext.core import nftset, setsync
from f2b_ext.errors import F2bExtError

NAME = "fleet-agent"                 # in nftset's naming: sets fleet_agent_h4, fleet_agent_h6


class KernelError(F2bExtError, RuntimeError):
    """libnftables refused a command; the message is its first error line."""


class AgentSets:
    def __init__(self, direction: str = "in", blocktype: str = "drop"):
        nftset.validate(direction, blocktype)
        self.direction, self.blocktype = direction, blocktype
        self._nft = None

    def _cmd(self, script: str, as_json: bool = False) -> str:
        from f2b_ext.system.libnftables import LIBNFTABLES
        if self._nft is None:
            try:
                from nftables import Nftables
            except ImportError as exc:
                raise KernelError(f"python3-nftables is not installed ({exc})") from None
            self._nft = (Nftables(), Nftables())
            self._nft[1].set_json_output(True)
        with LIBNFTABLES:
            rc, out, err = self._nft[1 if as_json else 0].cmd(script)
        if rc != 0:
            raise KernelError((err.strip().splitlines() or [f"nft returned {rc}"])[0])
        return out

    def set_names(self) -> list[str]:
        return [f"{nftset.jail_key(NAME)}_h{fam}" for fam in (4, 6)]

    def setup(self):
        self._cmd(nftset.setup_script(NAME, self.direction, self.blocktype))

    def intact(self) -> bool:
        """Both chains hold the rule of both sets (a `flush ruleset` removes the table)."""
        key = nftset.jail_key(NAME)
        try:
            for hook, _ in nftset.HOOKS[self.direction]:
                out = self._cmd(f"list chain {nftset.TABLE} {key}_{hook}")
                if any(f"@{name} " not in out for name in self.set_names()):
                    return False
        except KernelError:
            return False
        return True

    def held(self) -> dict:
        """{network: seconds left} the kernel holds."""
        from f2b_ext.core.nftset import elements
        held = {}
        for name in self.set_names():
            held.update(elements(json.loads(self._cmd(f"list set {nftset.TABLE} {name}", as_json=True))))
        return held

    def write(self, add=(), retime=(), remove=()):
        """One transaction: add [(network, seconds left)], retime [(network, seconds
        left)], remove [network]. Raises KernelError."""
        script = [s for s in (nftset.add_elements_script(NAME, add) if add else "",
                              nftset.retime_elements_script(NAME, retime) if retime else "",
                              nftset.remove_elements_script(NAME, remove) if remove else "") if s]
        if script:
            self._cmd("\n".join(script))

    def sync(self, listed: dict, tolerance: float = 3.0) -> setsync.Plan:
        """Make the kernel hold `listed` exactly; returns what differed (already fixed)."""
        plan = setsync.plan(listed, self.held(), tolerance=tolerance)
        if plan:
            self.write(plan.add, plan.retime, plan.remove)
        return plan

    def teardown(self):
        self._cmd(nftset.teardown_script(NAME, self.direction, self.set_names()))

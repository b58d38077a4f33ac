"""Adapter: this machine's own addresses, read from its interfaces (`ip -j addr`), in
the network namespace of the calling process. Shared by subnet-escalate (never escalate
over them), check (ignoreip should hold them) and synwatch (never report them); it
imports nothing from fail2ban, so the watcher runs without it."""
from __future__ import annotations

import json
import subprocess


def own_addresses() -> list[str]:
    """Every address on this machine's interfaces; [] if `ip` cannot tell."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, timeout=5).stdout
        return [a["local"] for link in json.loads(out or "[]") for a in link.get("addr_info", [])]
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []

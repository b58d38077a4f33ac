"""libnftables (Debian's python3-nftables) in this process: one lock for every call.

How it works: nothing more than the lock. libnftables is not safe to call from two
threads at once, even with one context each, and every user in one process (the nftset
action's jails inside fail2ban-server, the fleet agent's sets) takes it around each call.
"""
from __future__ import annotations

import threading

# libnftables is not safe to call from two threads at once, even with one context each:
# its JSON output splits set types with strtok(), whose state is global, and a second
# thread's call in between makes it abort the whole fail2ban-server (json.c:71
# set_dtype_json: Assertion `__out' failed; seen when two jails' watchdogs listed their
# sets at the same moment). Every call in this process goes through this lock.
LIBNFTABLES = threading.Lock()

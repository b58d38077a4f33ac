# Fail2Ban action: bans into nftables sets that hold hosts and subnets, in-process.
#
#   action = nftset.py[direction=in, blocktype=drop]
#            subnet-escalate.py[hosts=5]
#
# One table `inet f2b_ext`; per jail, timeout sets for IPv4/IPv6 hosts and one interval
# set per prefix length for escalated subnets (so a host, its /24 and the /16 above it
# coexist), each element timing out with its ban even if fail2ban dies. Chains on input
# and forward (direction=in, match the source) or on output and forward (direction=out,
# match the destination: blocks egress to the remote). Uses Debian's python3-nftables
# (libnftables) inside fail2ban-server: no process per ban; bans arriving within `batch`
# seconds are written together. If the table disappears (`nft flush ruleset`,
# `systemctl restart nftables`) it is rebuilt and refilled from the jail's ban list on
# the next ban, or by the check that runs every `checkinterval` seconds.
#
# Parameters:
#   direction      in (block the source) | out (block egress to the destination); default in
#   blocktype      drop | reject; default drop
#   batch          seconds to gather bans into one update (0..5); default 0.02
#   checkinterval  seconds between checks that the table is intact (0: off); default 10
# The logic lives in the f2b_ext package.

from f2b_ext.plugins.nftset import NftSetAction as Action  # noqa: F401

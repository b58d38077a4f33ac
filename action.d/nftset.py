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
# seconds (default 0.02) are written together. Rebuilds and refills the table if it
# disappears (nft flush ruleset).
#
# Parameters: direction=in|out, blocktype=drop|reject, batch=0.02
# The logic lives in the f2b_ext package.

from f2b_ext.f2b_nftset import NftSetAction as Action  # noqa: F401

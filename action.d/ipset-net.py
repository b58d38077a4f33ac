# Fail2Ban action: bans into ipset hash:net sets matched by iptables rules, for hosts
# whose firewall is iptables (iptables-nft or iptables-legacy).
#
#   action = ipset-net.py[direction=in, blocktype=drop]
#            subnet-escalate.py[hosts=5]
#
# Per jail, one hash:net set per family (f2bx-<jail>-4, f2bx-<jail>-6). hash:net holds
# hosts and subnets side by side, overlapping ones too, each element with its own
# timeout (the ban's remaining time), so bans end even if fail2ban dies. One rule first
# in INPUT and FORWARD (direction=in, `--match-set ... src`) or OUTPUT and FORWARD
# (direction=out, `... dst`: blocks egress to the remote), for iptables and ip6tables.
# Bans arriving within `batch` seconds are written with one `ipset restore`. If the
# rules or sets disappear (`iptables -F`, a firewall reload) they are rebuilt and
# refilled from the jail's ban list on the next ban, or by the check that runs every
# `checkinterval` seconds. Unlike stock iptables-ipset (hash:ip), this holds subnets.
#
# Parameters:
#   direction      in | out; default in
#   blocktype      drop | reject; default drop
#   batch          seconds to gather bans into one update (0..5); default 0.02
#   checkinterval  seconds between checks that sets and rules are intact (0: off); default 10
# The logic lives in the f2b_ext package.

from f2b_ext.plugins.ipset_net import IpsetNetAction as Action  # noqa: F401

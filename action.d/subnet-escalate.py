# Fail2Ban action: escalate host bans to subnet bans, with an unban schedule.
#
# Add it next to any ban action of a jail:
#
#   action = %(action_)s
#            subnet-escalate.py[hosts=5, window=1h, schedule="1h 6h 1d 1w"]
#
# When `hosts` distinct hosts inside one /24 (IPv6 /64) are banned within `window`, the
# /24 is banned through fail2ban itself (every action of the jail, the database,
# `fail2ban-client status`, restored after restarts, lifted on schedule). When `nets`
# escalated /24s gather inside a /16 (/48), that is banned. A prefix's ban length follows
# `schedule` by how often it was escalated before (fail2ban's database, within `forget`),
# capped by `maxtime`, with up to `rndtime` of jitter.
#
# Never escalated: a prefix holding an address of the jail's ignoreip, of this machine,
# or of `protect` (a list of CIDRs); a prefix wider than maxprefix4/maxprefix6 (/16, /32);
# a prefix overlapping `bogons` ("default": RFC 1918, loopback, documentation, ...; or
# your own list; "none"). Evidence trivial to forge (UDP, ICMP, GRE ... per the filter's
# captured protocol) does not count unless spoofable=count, and then gets the shortest
# step of the schedule. Outbound lines (captured dir OUT) are never forgeable.
#
# Parameters (defaults): hosts=5 nets=3 prefix4=24 prefix6=64 wide4=16 wide6=48
#   (or ladder4="24:5 16:3" ladder6="64:5 48:3"), window=1h, schedule="1h 6h 1d 1w",
#   maxtime=(longest step + rndtime), rndtime=0, forget=30d, maxprefix4=16,
#   maxprefix6=32, protect=, bogons=default, spoofable=ignore
#
# See what it does:
#   fail2ban-client get <jail> action subnet-escalate status
#   fail2ban-client get <jail> action subnet-escalate escalations
#   fail2ban-client get <jail> action subnet-escalate counting
#   fail2ban-client get <jail> action subnet-escalate unbans
#
# The logic lives in the f2b_ext package (f2b-ext install makes it importable by the
# Python that runs fail2ban-server).

from f2b_ext.f2b_action import SubnetEscalateAction as Action  # noqa: F401

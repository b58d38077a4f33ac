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
# Never banned, host or prefix, with no configuration: what this server depends on. Its
# addresses, gateways and IPv6 routers, resolvers (resolv.conf, systemd-resolved), NTP
# servers (chrony, ntpd, timesyncd), the names in ignoreip, `protect` (CIDRs), and the
# peers it opened connections to (remembered `retention`, 7d, beside fail2ban's
# database; `peers=allow` turns that off, as the outbound jail does). They go into the
# jail's ignore list at once and are refreshed every `refresh` (30s); when one cannot be
# read or a name does not resolve, escalation is held (fail closed).
# Never escalated either: a prefix wider than maxprefix4/maxprefix6 (/16, /32), or
# overlapping `bogons` ("default": RFC 1918, loopback, documentation, ...; or your own
# list; "none").
#
# Evidence: an inbound LOG line is forgeable whatever its protocol (no handshake); an
# outbound one was chosen by a local process; an application's log is proven. Forgeable
# evidence counts (spoofable=ignore drops it) but its escalations last `forgedschedule`
# (30m, flat); only proven evidence climbs to the /16 (/48) unless widen=outbound or
# widen=forgeable; escalations on unproven evidence stop past `maxrate` (10/1h) or
# `maxheld` (64 /24s' worth held at once), and `status` says so.
#
# Parameters (defaults): hosts=5 nets=3 prefix4=24 prefix6=64 wide4=16 wide6=48
#   (or ladder4="24:5 16:3" ladder6="64:5 48:3"), window=1h, schedule="1h 6h 1d 1w",
#   forgedschedule=30m, maxtime=(longest step + rndtime), rndtime=0, forget=30d,
#   maxprefix4=16, maxprefix6=32, protect=, bogons=default, spoofable=count,
#   widen=proven, maxrate=10/1h, maxheld=64, peers=protect, retention=7d, refresh=30s,
#   statedir=(fail2ban's database directory)
#
# See what it does:
#   fail2ban-client get <jail> action subnet-escalate status
#   fail2ban-client get <jail> action subnet-escalate escalations
#   fail2ban-client get <jail> action subnet-escalate counting
#   fail2ban-client get <jail> action subnet-escalate unbans
#   fail2ban-client get <jail> action subnet-escalate dependencies
#
# The logic lives in the f2b_ext package (f2b-ext install makes it importable by the
# Python that runs fail2ban-server).

from f2b_ext.plugins.subnet_escalate import SubnetEscalateAction as Action  # noqa: F401

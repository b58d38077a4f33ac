# Fail2Ban action: share this jail's bans with the fleet (f2b-ext fleet), or receive the
# fleet's bans in the fleet jail.
#
# In a jail whose bans the other servers should get:
#   action = %(action_)s
#            fleet.py[role=publish]
# In the fleet jail (bans come from the agent; see jail.d/f2b-ext-fleet.conf):
#   action = nftset.py[direction=in]
#            fleet.py[role=inbox]
#
# role=publish appends each ban (address or prefix, evidence proven|forgeable from the
# filter's captured proto and dir, jail, end time) to the local spool, a SQLite file
# written before ban() returns; fail2ban's ban thread never waits on the network. The
# agent (`f2b-ext fleet run`, systemd unit f2b-ext-fleet) publishes it. Restored bans
# are not re-sent; an unban before the ban's end (an admin's unbanip) is sent.
# role=inbox takes the agent's batches of remote bans and bans each for its remaining
# time through this jail (fail2ban's database, status, restarts and unbans all apply).
#
# Parameters:
#   role     publish | inbox; default publish
#   server   this server's fleet name; default the short host name
#   spool    the spool file; default /var/lib/f2b-ext/fleet-spool.sqlite3
# The logic lives in the f2b_ext package.

from f2b_ext.plugins.fleet import FleetAction as Action  # noqa: F401

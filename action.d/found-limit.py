# Fail2Ban action: write at most `rate` of the jail's "Found" log lines, not one per failure.
#
# fail2ban logs "[jail] Found ADDR - TIME" (INFO) for every failure its filter counts. A
# flood of forged LOG lines makes that one line in fail2ban.log per flood line, and
# writing it costs fail2ban more CPU than matching the line (BENCHMARKS.md, "Where
# fail2ban-server's CPU goes": with this action 160 -> 88 us of CPU per flood line on
# fail2ban 1.0.2, 92 -> 64 on 1.1.0). Add it to a jail's action:
#
#   action = %(action_)s
#            found-limit.py[rate=20/1s]
#
# The first `rate` Found lines of each window are written as before; the rest of the
# window are only counted, and the next line written is preceded by one summary:
#
#   [f2b-ext-inbound] 2980 Found lines not written since 10:00:05 (found-limit: at most
#   20 per 1s); fail2ban counted every failure
#
# Only the log line is held back: fail2ban counts, tickets and bans every failure exactly
# as without this action, and Ban/Unban lines (NOTICE) are never touched. Lines of other
# jails pass. rate=none writes all (as if the action were not there).
#
# Parameters (defaults): rate=20/1s (COUNT/DURATION, or none)

from f2b_ext.plugins.found_limit import FoundLimitAction as Action  # noqa: F401

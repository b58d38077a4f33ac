"""f2b-ext: fail2ban filters, actions and jails that turn kernel firewall LOG lines into bans.

The pure core (netfilter, escalation, nftset, ipset, install, report) decides; the
adapters (f2b_*, installer, lab, live, cli) do the I/O around it.
"""
__version__ = "0.1.0"

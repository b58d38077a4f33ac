"""f2b-ext: fail2ban filters, actions and jails that turn kernel firewall LOG lines into bans.

The package in five parts (tests/test_layout.py checks the import rules):
  core/     pure decisions on plain data: no I/O, no fail2ban import
  plugins/  exactly what fail2ban-server imports: the Python actions of action.d/
  system/   adapters to this machine, to the running fail2ban and to the fleet's bus
  cli/      the f2b-ext command, one module per command
  lab/      namespaces, forged frames, the live demo, the fleet lab: never installed
            for fail2ban
and errors.py (the one error hierarchy), shipped.py (the package data in data/).
A concern keeps one name across parts: core/nftset.py decides the nft text,
plugins/nftset.py is the fail2ban action that runs it. f2b_action.py, f2b_nftset.py,
f2b_ipset.py, f2b_setaction.py and f2b_fleet.py are the old import paths, kept for
action.d files copied before this layout.
"""
__version__ = "0.1.0"

"""The old import path of f2b_ext.plugins.ipset_net, kept for action.d files copied
before the package had its parts (`from f2b_ext.f2b_ipset import IpsetNetAction`):
importing this module gives that one (tests/test_layout.py)."""
import sys

from f2b_ext.plugins import ipset_net

sys.modules[__name__] = ipset_net

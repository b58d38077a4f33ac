"""The old import path of f2b_ext.plugins.fleet, kept for action.d files copied
before the package had its parts (`from f2b_ext.f2b_fleet import FleetAction`):
importing this module gives that one (tests/test_layout.py)."""
import sys

from f2b_ext.plugins import fleet

sys.modules[__name__] = fleet

"""The old import path of f2b_ext.plugins.subnet_escalate, kept for action.d files copied
before the package had its parts (`from f2b_ext.f2b_action import SubnetEscalateAction`):
importing this module gives that one (tests/test_layout.py)."""
import sys

from f2b_ext.plugins import subnet_escalate

sys.modules[__name__] = subnet_escalate

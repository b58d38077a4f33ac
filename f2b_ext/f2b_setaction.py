"""The old import path of f2b_ext.plugins.set_action, kept for action.d files copied
before the package had its parts (`from f2b_ext.f2b_setaction import SetAction`):
importing this module gives that one (tests/test_layout.py)."""
import sys

from f2b_ext.plugins import set_action

sys.modules[__name__] = set_action

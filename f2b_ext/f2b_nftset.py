"""The old import path of f2b_ext.plugins.nftset, kept for action.d files copied
before the package had its parts (`from f2b_ext.f2b_nftset import NftSetAction`):
importing this module gives that one (tests/test_layout.py)."""
import sys

from f2b_ext.plugins import nftset

sys.modules[__name__] = nftset

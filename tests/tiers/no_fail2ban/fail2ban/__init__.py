# `make test-pure` puts this directory first on PYTHONPATH (for pytest and every process
# it starts), so that a pure test cannot use fail2ban without failing: the pure tier is
# proven to need no fail2ban. A test that does belongs to the fail2ban tier
# (tests/conftest.py: FAIL2BAN_TIER).
raise ImportError("fail2ban is not importable in the pure tier (make test-pure): "
                  "a test that needs it belongs to FAIL2BAN_TIER in tests/conftest.py")

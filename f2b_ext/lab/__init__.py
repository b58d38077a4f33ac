"""The lab: network namespaces, forged raw frames, the live demo and its private
fail2ban-server, the fleet lab. Root only, for tests, benchmarks and `f2b-ext demo`;
never installed next to the firewall daemon (f2b_ext.core.install.LAB_MODULES), and the
command line reaches it only from inside `f2b-ext demo` (tests/test_layout.py)."""

"""The pure core: decisions on plain data. No I/O (no files, sockets, processes or
threads; time only as a value passed in, or to format one) and no fail2ban import; it
imports nothing of f2b_ext but itself and f2b_ext.errors (tests/test_layout.py).
One module a concern, named for it; its adapter, where it has one, has the same name in
system/, plugins/ or cli/."""

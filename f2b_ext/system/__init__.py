"""Adapters to this machine, to the running fail2ban and to the fleet's bus: they
gather plain data for the core and carry out its decisions (files, processes, sockets,
the kernel). They may import core/, never plugins/, cli/ or lab/ (tests/test_layout.py)."""

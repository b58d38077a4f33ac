"""`python3 -m f2b_ext`: the f2b-ext command, for a Python that has f2b_ext but no console
script (fail2ban's, after `f2b-ext install`; the synwatch systemd unit runs it so)."""
import sys

from .cli import main

sys.exit(main())

"""What fail2ban-server imports: the Python actions that action.d/*.py load, named as
their action.d file (subnet-escalate -> subnet_escalate), and set_action, the base of the
set actions. They may import core/ and system/, never cli/ or lab/ (tests/test_layout.py);
`f2b-ext install` copies them, and what they import, into fail2ban's Python."""

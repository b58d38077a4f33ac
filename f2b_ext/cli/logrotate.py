"""`f2b-ext logrotate`: logrotate's prerotate/postrotate hooks (f2b_ext.system.rotation does the work)."""

from __future__ import annotations

from f2b_ext.cli.common import command


def add_parser(sub) -> None:
    """The `logrotate` command's arguments (sub: build_parser's subparsers)."""
    from f2b_ext.system import rotation
    lr = command(sub, "logrotate", rotation.run,
                 help="logrotate's prerotate/postrotate for a log fail2ban reads: loses no line",
                 description="Run by logrotate (logrotate.d/f2b-ext-netfilter): prerotate sets the jails "
                             "reading LOG idle, postrotate hands the old file's unread lines to them before "
                             "they read the new one (see f2b_ext/system/rotation.py).")
    rotation.add_arguments(lr)

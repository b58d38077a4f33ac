"""What every command shares: how a command and the options several commands take are
declared, the one-line errors for a log file or a `--filter SPEC` it was given, and
coloured output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from f2b_ext.errors import CliError

FAIL2BAN_CONF = "/etc/fail2ban"           # fail2ban's configuration directory, unless --conf


def command(sub, name: str, run, help: str, description: str | None = None):
    """The parser of command `name` (sub: build_parser's subparsers), run by `run(args)`;
    the caller adds its arguments."""
    parser = sub.add_parser(name, help=help, description=description)
    parser.set_defaults(func=run)
    return parser


def add_conf_option(parser) -> None:
    """--conf CONFDIR (also spelled --config): fail2ban's configuration directory."""
    parser.add_argument("--conf", "--config", dest="conf", default=FAIL2BAN_CONF, metavar="CONFDIR",
                        help=f"fail2ban's configuration directory (default {FAIL2BAN_CONF})")


def add_json_option(parser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def file_error(path, exc: OSError) -> CliError:
    """The one line a command says when it cannot read `path`."""
    reason = {FileNotFoundError: "no such file", NotADirectoryError: "no such file",
              PermissionError: "permission denied", IsADirectoryError: "is a directory"}.get(type(exc))
    return CliError(f"{path}: {reason or exc.strerror or exc}")


def readable_file(path) -> Path:
    """`path` if it is a file this user may read, else a one-line CliError saying why not."""
    path = Path(path)
    try:
        if stat.S_ISDIR(path.stat().st_mode):
            raise IsADirectoryError
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))     # a FIFO does not block
    except OSError as exc:
        raise file_error(path, exc) from None
    return path


def filter_spec(spec: str, known: tuple, reads: str) -> tuple[str, dict]:
    """(name, options) of a `--filter SPEC` as a jail writes it, read by fail2ban; a
    filter not in `known` is a one-line error naming what `reads` (the command) reads."""
    from f2b_ext.system.filter_runner import parse_filter_spec
    name, options = parse_filter_spec(spec)
    if name not in known:
        raise CliError(f"unknown filter {name!r} ({reads}: {', '.join(known)})")
    return name, options


def netfilter_policy(spec: str, options: dict, **fixed):
    """The core's Policy for the netfilter filter's `options` (and `fixed` over them);
    a bad value is a one-line error naming the filter `spec` it came from."""
    from f2b_ext.core import netfilter
    try:
        return netfilter.Policy.from_filter_options({**options, **fixed})
    except ValueError as exc:
        raise CliError(f"filter {spec}: {exc}") from None


class Style:
    """ANSI colour only on a terminal (and never with NO_COLOR)."""

    def __init__(self, stream, mode: str = "auto"):
        self.on = mode == "always" or (mode == "auto" and stream.isatty() and "NO_COLOR" not in os.environ)

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.on else text

    def red(self, t): return self._c("31;1", t)
    def green(self, t): return self._c("32", t)
    def dim(self, t): return self._c("2", t)
    def bold(self, t): return self._c("1", t)

"""The `f2b-ext` command line.

How it works: one module per command (cli/test.py, report, schedule, check, install,
synwatch, fleet, demo), each with its `add_parser(sub)` (its arguments) and its `cmd_*`
function, which gathers its input through the adapters (f2b_ext.system), asks the pure
core (f2b_ext.core) or fail2ban for decisions, and prints. `build_parser()` adds the
commands in the order `--help` lists them; `main()` runs one. Every error f2b-ext
raises on purpose (f2b_ext.errors) is one line on stderr and exit status 2, never a
traceback. The lab is imported only from inside `f2b-ext demo`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from f2b_ext import __version__
from f2b_ext.cli import check, demo, fleet, install, logrotate, report, schedule, synwatch, test
from f2b_ext.errors import F2bExtError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line too (the usage is what --help is for)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="f2b-ext", description="fail2ban filters, actions and jails that turn kernel firewall "
                                           "LOG lines into bans: install them, check the machine, test "
                                           "logs, report, show the ban schedule.")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour output (default: only on a terminal)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for command in (test, report, schedule, check, install, synwatch, fleet, logrotate, demo):
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except F2bExtError as exc:              # one line (f2b_ext.errors)
        print(f"f2b-ext: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("f2b_ext."):
            raise
        # the copy `install` gives fail2ban's Python holds only what fail2ban and synwatch need
        print(f"f2b-ext: {exc.name} is not in {Path(__file__).parent.parent} (the part of f2b_ext installed for "
              "fail2ban): run the f2b-ext command you installed (pip, pipx, a package or the checkout's .venv)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("f2b-ext: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:                   # anything the commands did not foresee
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"f2b-ext: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

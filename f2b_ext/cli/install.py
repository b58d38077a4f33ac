"""`f2b-ext install` / `uninstall`: prints what f2b_ext.system.install did (f2b_ext.core.install decided)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from f2b_ext.cli.common import Style, command
from f2b_ext.errors import CliError


VERB_STYLE = {"new": "green", "updated": "green", "replaced": "red", "kept": "red",
              "removed": "green", "same": "dim", "gone": "dim"}


def _run_installer(args, what: str):
    """(installer, result) of Installer.install or .uninstall."""
    from f2b_ext.system.install import Installer
    if os.geteuid() != 0 and args.root == "/" and not args.dry_run:
        raise CliError(f"{what} into / needs root (try --dry-run, or --root DIR)")
    installer = Installer(Path(args.root), force=args.force)
    return installer, getattr(installer, what)(dry_run=args.dry_run)


def _print_steps(out: Style, steps, root: str, verbose: bool):
    """One line per file; the f2b_ext package's files one line per verb unless verbose."""
    package: dict[str, list] = {}
    for step in steps:
        if "/f2b_ext/" in step.path and not verbose and not step.diff:
            package.setdefault(step.verb, []).append(step)
            continue
        colour = getattr(out, VERB_STYLE.get(step.verb, "bold"))
        print(f"  {colour(f'{step.verb:<8}')} {Path(root, step.path)}")
        if step.diff:
            for line in step.diff.rstrip("\n").splitlines():
                print("    " + (out.red(line) if line.startswith("-") and not line.startswith("---")
                                else out.green(line) if line.startswith("+") and not line.startswith("+++")
                                else line))
            print("    " + (out.red("replaced your version (--force)") if step.verb == "replaced"
                            else out.bold("kept your version; `f2b-ext install --force` replaces it")))
    for verb, group in package.items():
        colour = getattr(out, VERB_STYLE.get(verb, "bold"))
        where = Path(root, group[0].path).parent
        print(f"  {colour(f'{verb:<8}')} {where}/ ({len(group)} files of the f2b_ext package; -v lists them)")


def cmd_install(args) -> int:
    out = Style(sys.stdout, args.color)
    installer, result = _run_installer(args, "install")
    print(out.bold(f"f2b-ext install into {installer.etc}" + (" (dry run: nothing written)" if args.dry_run else "")))
    _print_steps(out, result.steps, args.root, args.verbose)
    for note in result.notes:
        print(f"  {out.dim('note')}     {note}")
    if args.dry_run:
        return 0
    print(out.bold("validate"))
    for check in result.checks:
        mark = out.red("FAIL") if not check.ok else out.bold("warn") if check.warn else out.green("ok  ")
        print(f"  {mark}     {check.what}" + (f": {check.detail}" if check.detail else ""))
    if not result.ok:
        print(out.red("f2b-ext is installed but fail2ban would not run it: fix the FAIL lines above"))
        return 1
    rsyslog = any(s.path.endswith("f2b-ext-netfilter.conf") and s.verb != "same" for s in result.steps)
    unit = any(s.path.endswith("f2b-ext-synwatch.service") and s.verb != "same" for s in result.steps)
    print(out.bold("next"))
    steps = ["enable a jail in /etc/fail2ban/jail.local, e.g.  [f2b-ext-inbound]  enabled = true"]
    if rsyslog and not result.reads_journal:     # the journal needs no rsyslog
        steps.append("systemctl restart rsyslog   (starts /var/log/netfilter.log)")
    steps += ["have your firewall LOG what it drops (ufw logging on, firewall-cmd --set-log-denied=all, "
              "or an nft `log prefix` rule)",
              "f2b-ext check   (finds what would keep the jails from seeing or banning)",
              *(["systemctl daemon-reload && systemctl enable --now f2b-ext-synwatch   (SYN floods on open "
                 "ports, for the f2b-ext-synrecv jail)"] if unit else []),
              "fail2ban-client reload && fail2ban-client status f2b-ext-inbound"]
    for n, step in enumerate(steps, 1):
        print(f"  {n}. {step}")
    return 0


def cmd_uninstall(args) -> int:
    out = Style(sys.stdout, args.color)
    _, result = _run_installer(args, "uninstall")
    print(out.bold(f"f2b-ext uninstall from {args.root}" + (" (dry run: nothing removed)" if args.dry_run else "")))
    _print_steps(out, result.steps, args.root, True)
    kept = [s for s in result.steps if s.verb == "kept"]
    if kept:
        print(out.red(f"{len(kept)} changed since install, left in place (--force removes them too)"))
        return 1
    return 0


def add_parser(sub) -> None:
    """The `install` command's arguments (sub: build_parser's subparsers)."""
    for name, helptext in (("install", "copy the filters, actions and jails into /etc/fail2ban and validate"),
                           ("uninstall", "remove exactly what install put there")):
        i = command(sub, name, cmd_install if name == "install" else cmd_uninstall, help=helptext,
                    description=helptext[0].upper() + helptext[1:] + ". "
                    + ("Never overwrites a file you changed (it shows the difference; --force "
                       "replaces it) and never writes a .local file; makes f2b_ext importable "
                       "by the Python that runs fail2ban-server; checks the result with "
                       "fail2ban-server -t." if name == "install" else
                       "Files changed since install are kept unless --force; refuses while a "
                       "f2b-ext jail is enabled."))
        i.add_argument("--root", default="/", metavar="DIR",
                       help="install under DIR (DIR/etc/fail2ban, ...) instead of /")
        i.add_argument("--dry-run", "-n", action="store_true", help="say what would change, change nothing")
        i.add_argument("--force", action="store_true",
                       help="replace (or remove) files changed since the last install")
        i.add_argument("-v", "--verbose", action="store_true", help="list every file, unchanged ones too")

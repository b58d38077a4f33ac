"""What `f2b-ext install` and `uninstall` would do: decided on plain data, no I/O.

How it works: the installer (f2b_ext/system/install.py) reads the files this suite ships, the
files already at their destinations and the manifest of the last install, and asks
`plan_install()` what to do with each; `plan_uninstall()` does the same the other way.
The rule is dpkg's conffile rule:
  - a destination that is missing is written (new);
  - one that already holds exactly our text is left (same);
  - one that still holds what we installed last time is replaced (updated);
  - anything else was changed by somebody (or was never ours): it is kept, the
    difference is shown, and only `--force` replaces it (or, on uninstall, removes it).
A file the last install wrote that we no longer ship (a module an older version copied)
is removed when it is still exactly as written, else kept. A `.local` file is never
written: it is the admin's, and we only point out the ones that override our files. The
manifest maps each installed path to the SHA-256 of what was written, so that
`uninstall` removes exactly that and nothing else.

Which modules of f2b_ext go into fail2ban's Python is decided here too
(`fail2ban_modules()`): what action.d/*.py import and what the synwatch unit runs
(`python3 -m f2b_ext synwatch`), followed through every import, never into the lab.
"""
from __future__ import annotations

import ast
import difflib
import hashlib
import json
import re
from dataclasses import dataclass

# Where things go, relative to the root ("/" or --root DIR).
FAIL2BAN_DIR = "etc/fail2ban"
RSYSLOG_RULE = "etc/rsyslog.d/30-f2b-ext-netfilter.conf"
SYNWATCH_UNIT = "etc/systemd/system/f2b-ext-synwatch.service"
LOGROTATE_FILE = "etc/logrotate.d/f2b-ext-netfilter"     # with the rsyslog rule, where logrotate is
UNIT_PYTHON = "/usr/bin/python3 -m f2b_ext"        # as systemd/f2b-ext-synwatch.service says
MANIFEST = "var/lib/f2b-ext/manifest.json"

# Our jails' names start so (jail.d/f2b-ext.conf: [f2b-ext-inbound] ...).
JAIL_PREFIX = "f2b-ext-"

# fail2ban versions whose Python-action and jail protocol this suite is written against
# (Debian 12 ships 1.0.2; 1.1 keeps the same ActionBase and reader).
SUPPORTED = ((1, 0), (1, 1))

# The lab: network namespaces it enters, forged raw frames, the live demo and its
# private fail2ban-server, the fleet lab. Never installed next to the firewall daemon; the command line
# reaches it only from `f2b-ext demo`.
LAB_MODULES = frozenset({"lab"})      # the lab/ part
# Besides the modules action.d/*.py import: what the synwatch unit runs with fail2ban's Python,
# and the old import paths of the actions, which action.d files an admin kept still use.
OLD_ACTION_PATHS = ("f2b_action", "f2b_setaction", "f2b_nftset", "f2b_ipset", "f2b_fleet")
RUNTIME_ENTRIES = ("__init__", "__main__", "system.synwatch", *OLD_ACTION_PATHS)

# Modes, whatever the umask: files and the directories install creates are readable by
# all (fail2ban-server, the synwatch unit's dynamic user) and writable by root only.
FILE_MODE, DIR_MODE = 0o644, 0o755

# Verbs, in the order a person wants to read them.
NEW, UPDATED, SAME, KEPT, REPLACED = "new", "updated", "same", "kept", "replaced"
REMOVED, GONE = "removed", "gone"


@dataclass(frozen=True)
class Step:
    path: str                    # relative to the root
    verb: str                    # one of the verbs above
    diff: str = ""               # unified diff (destination -> ours) when verb is KEPT/REPLACED


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unified_diff(path: str, old: bytes, new: bytes) -> str:
    try:
        a, b = old.decode().splitlines(keepends=True), new.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"(binary content differs: {path})\n"
    return "".join(difflib.unified_diff(a, b, f"/{path} (yours)", f"/{path} (f2b-ext)"))


def plan_install(ours: dict[str, bytes], existing: dict[str, bytes | None],
                 manifest: dict[str, str], force: bool = False) -> list[Step]:
    """One Step per file we ship, and one per file of the last install we no longer ship.
    `existing[path]` is the destination's content or None."""
    steps = []
    for path in sorted(ours):
        new, old = ours[path], existing.get(path)
        if old is None:
            steps.append(Step(path, NEW))
        elif old == new:
            steps.append(Step(path, SAME))
        elif manifest.get(path) == digest(old):
            steps.append(Step(path, UPDATED))
        else:
            steps.append(Step(path, REPLACED if force else KEPT, unified_diff(path, old, new)))
    for path in sorted(set(manifest) - set(ours)):          # shipped before, not any more
        old = existing.get(path)
        if old is None:
            continue
        steps.append(Step(path, REMOVED if force or digest(old) == manifest[path] else KEPT))
    return steps


def plan_uninstall(manifest: dict[str, str], existing: dict[str, bytes | None],
                   force: bool = False) -> list[Step]:
    """One Step per file the last install wrote."""
    steps = []
    for path in sorted(manifest):
        old = existing.get(path)
        if old is None:
            steps.append(Step(path, GONE))
        elif digest(old) == manifest[path] or force:
            steps.append(Step(path, REMOVED))
        else:
            steps.append(Step(path, KEPT))
    return steps


def manifest_after(steps: list[Step], ours: dict[str, bytes], previous: dict[str, str]) -> dict[str, str]:
    """The manifest once `steps` are applied: what we wrote, plus what we own unchanged."""
    result = {}
    for step in steps:
        if step.verb in (NEW, UPDATED, REPLACED, SAME):
            result[step.path] = digest(ours[step.path])
        elif step.verb == KEPT and step.path in previous:    # still ours to remove, as last written
            result[step.path] = previous[step.path]
    return result


def module_name(relpath: str) -> str:
    """A module's dotted name inside the package from its file's path there:
    "core/escalation.py" -> "core.escalation", "core/__init__.py" -> "core.__init__"."""
    return relpath[:-len(".py")].replace("/", ".")


def is_lab(name: str) -> bool:
    """Whether a module (dotted name inside the package) is lab code."""
    return name.split(".")[0] in LAB_MODULES


def imported_modules(source: str, package: str = "f2b_ext", module: str = "__init__") -> set[str]:
    """The modules of `package` that Python source may import, anywhere in it (function
    bodies too), as dotted names inside the package, for a source that is `module` there
    (relative imports are read from it): `from . import x`, `from .x import y`,
    `import f2b_ext.x`, `from f2b_ext.x import y`. `from M import y` names both M and
    M.y, for y may be a submodule; `resolve()` keeps those that exist."""
    here = module.split(".")[:-1]            # the package `module` is in, as parts
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                if node.level - 1 > len(here):
                    continue                 # above the package
            elif node.module == package or (node.module or "").startswith(package + "."):
                parts = []
            else:
                continue
            parts += (node.module.split(".") if node.module else []) if node.level else \
                node.module.split(".")[1:]
            if parts:
                found.add(".".join(parts))
            found.update(".".join(parts + [a.name]) for a in node.names if a.name != "*")
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".", 1)[1] for a in node.names if a.name.startswith(package + "."))
    return found


def resolve(name: str, modules: dict[str, str]) -> list[str]:
    """The files importing `name` runs, of `modules` (their dotted names): the module
    or package itself and the __init__ of every package above it; [] if it is none."""
    if name in modules:
        found = [name]
    elif name + ".__init__" in modules:
        found = [name + ".__init__"]
    else:
        return []
    parts = name.split(".")
    return found + [".".join(parts[:n] + ["__init__"]) for n in range(1, len(parts))
                    if ".".join(parts[:n] + ["__init__"]) in modules]


def fail2ban_modules(modules: dict[str, str], actions: list[str]) -> list[str]:
    """Which of the package's modules ({dotted name: source}) fail2ban's Python needs:
    those the action files (their sources) import and RUNTIME_ENTRIES, followed through
    every import, never into the lab (is_lab)."""
    todo = [m for n in set(RUNTIME_ENTRIES).union(*map(imported_modules, actions)) for m in resolve(n, modules)]
    needed = set()
    while todo:
        name = todo.pop()
        if name in needed or is_lab(name):
            continue
        needed.add(name)
        todo += [m for n in imported_modules(modules[name], module=name) for m in resolve(n, modules)]
    return sorted(needed)


def package_source(found: tuple[str, str] | None, ours: str, version: str) -> str | None:
    """Whether to copy f2b_ext into fail2ban's Python, given where that Python already
    imports it from (`found`: (directory, version), or None) and where install puts it
    (`ours`). None: copy. Else the note saying why not. A package (Debian's, pip's into the
    system) already providing this version is used as it is: a partial copy in front of it
    would hide its data from its own f2b-ext command. Another version there: ValueError."""
    if found is None or found[0].rstrip("/") == ours.rstrip("/"):
        return None
    where, have = found
    if have != version:
        raise ValueError(f"fail2ban's Python already imports f2b_ext {have} from {where}: installing {version} "
                         "in front of it would hide it; upgrade or remove that copy first")
    return f"fail2ban's Python imports f2b_ext {have} from {where} (installed as a package): not copied"


def _relative(path) -> bool:
    return isinstance(path, str) and path != "" and not path.startswith("/") and ".." not in path.split("/")


def parse_manifest(text: str) -> tuple[dict[str, str], list[str]]:
    """The manifest file: (files -> SHA-256, directories install created). A damaged one
    is an error, never silently empty."""
    data = json.loads(text)
    files = data.get("files") if isinstance(data, dict) else None
    dirs = data.get("dirs", []) if isinstance(data, dict) else None
    if not isinstance(files, dict) or not isinstance(dirs, list) or not all(
            _relative(k) and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)
            for k, v in files.items()) or not all(_relative(d) for d in dirs):
        raise ValueError("not an f2b-ext manifest")
    return files, dirs


def format_manifest(files: dict[str, str], dirs: list[str], version: str) -> str:
    return json.dumps({"f2b-ext": version, "files": dict(sorted(files.items())),
                       "dirs": sorted(set(dirs))}, indent=1) + "\n"


def mode_for(existing_mode: int | None) -> int:
    """The permission bits a written file gets: the admin's (an existing file keeps its
    mode), else FILE_MODE; never writable by group or others, never setuid."""
    return (FILE_MODE if existing_mode is None else existing_mode) & 0o755


def missing_dirs(path: str, exists) -> list[str]:
    """The parent directories of `path` (relative) for which `exists(dir)` is false,
    outermost first: what writing `path` creates."""
    parts = path.split("/")[:-1]
    parents = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [d for d in parents if not exists(d)]


def render_jail(text: str, backend: str | None) -> str:
    """jail.d/f2b-ext.conf as installed: with `backend` set in [f2b-ext-inbound] (the
    others follow it) when the machine's log source is known to differ from what the
    distribution's paths file says; unchanged when `backend` is None."""
    if backend is None:
        return text
    section = re.search(r"^\[f2b-ext-inbound\][ \t]*$(?P<body>.*?)(?=^\[|\Z)", text, re.M | re.S)
    if not section:
        raise ValueError("jail.d/f2b-ext.conf has no [f2b-ext-inbound] section")
    # fail2ban keeps "# ..." after a value as part of it: the comment goes on its own line
    body, n = re.subn(r"^backend\s*=.*$", f"# chosen by f2b-ext install\nbackend  = {backend}",
                      section["body"], count=1, flags=re.M)
    if n != 1:
        raise ValueError("[f2b-ext-inbound] has no backend line")
    return text[:section.start("body")] + body + text[section.end("body"):]


def render_unit(text: str, python: str) -> str:
    """The synwatch unit (or the logrotate file's hooks), run by the Python that `install`
    made f2b_ext importable for."""
    if UNIT_PYTHON not in text:
        raise ValueError(f"the unit's ExecStart does not run {UNIT_PYTHON!r}")
    return text.replace(UNIT_PYTHON, f"{python} -m f2b_ext")


def choose_backend(has_rsyslog: bool, has_journal: bool) -> tuple[str | None, str]:
    """The backend to write into the jails (None: leave the distribution's), and why (one
    phrase). What the jails then read is what fail2ban resolves (backend_note)."""
    if has_rsyslog:
        return None, "rsyslog is installed: its f2b-ext rule writes /var/log/netfilter.log (imklog only)"
    if has_journal:
        return "systemd", "no rsyslog: the jails read the journal's kernel transport (backend = systemd)"
    return None, "neither rsyslog nor the journal found: set backend and logpath in jail.local"


def backend_note(resolved: str, logpaths: list[str]) -> str:
    """What the installed jails read, as fail2ban resolves f2b-ext-inbound on this machine
    (Debian 13's paths-debian.conf says syslog_backend = systemd, Debian 12's leaves auto)."""
    if resolved.startswith("systemd"):
        return f"fail2ban resolves backend = {resolved} here: the jails read the journal's kernel transport"
    return f"fail2ban resolves backend = {resolved} here: the jails read {', '.join(logpaths) or '(no logpath)'}"


def parse_version(text: str) -> tuple[int, ...] | None:
    """'Fail2Ban v1.0.2' / '1.0.2' -> (1, 0, 2)."""
    m = re.search(r"(?<![\d.])v?(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def version_problem(text: str) -> str | None:
    """None if this fail2ban is supported, else why not (one line)."""
    version = parse_version(text)
    if version is None:
        return f"cannot tell the fail2ban version from {text.strip()[:60]!r}"
    if version[:2] not in SUPPORTED:
        have = ".".join(map(str, version))
        want = " or ".join(".".join(map(str, v)) for v in SUPPORTED)
        return f"fail2ban {have} is not supported (f2b-ext needs {want})"
    return None


def overriding_locals(ours: list[str], present: set[str]) -> list[str]:
    """`.local` files (present, relative paths) that override a `.conf` we install."""
    return sorted(p[:-5] + ".local" for p in ours
                  if p.endswith(".conf") and p[:-5] + ".local" in present)


def enabled_suite_jails(sections: dict[str, dict[str, str]]) -> list[str]:
    """Our jails that the admin's jail.local (parsed: section -> options) enables."""
    return sorted(name for name, opts in sections.items()
                  if name.startswith(JAIL_PREFIX) and opts.get("enabled", "").strip().lower() in ("true", "yes", "1", "on"))

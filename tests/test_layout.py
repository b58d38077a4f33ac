"""The layout (f2b_ext/__init__.py) and its import rules, read from the source with the
same reader that `f2b-ext install` follows imports with (f2b_ext.core.install):

    core     imports only core and errors, and of the standard library only what does
             no I/O (CORE_STDLIB); never fail2ban
    system   core, errors, shipped (never plugins, cli or lab)
    plugins  core, system, errors, shipped; and they are exactly what action.d/*.py reach
    lab      anything but cli
    cli      anything, but the lab only from inside a function of cli/demo.py, so that
             every other command runs from the copy installed for fail2ban (no lab there)
    nobody imports cli but cli itself and __main__

Pure pytest on the source (no fail2ban, no kernel), but for the old import paths, which
load the fail2ban actions.
"""
from __future__ import annotations

import ast
import configparser
import importlib

import pytest

from conftest import ROOT
from f2b_ext.core import install as plan
from f2b_ext.system.install import package_sources

MODULES = package_sources(ROOT / "f2b_ext")
PARTS = ("core", "plugins", "system", "cli", "lab")
# the old import paths action.d files used before this layout: old -> (new, its Action class)
SHIMS = {"f2b_action": ("plugins.subnet_escalate", "SubnetEscalateAction"),
         "f2b_setaction": ("plugins.set_action", "SetAction"),
         "f2b_nftset": ("plugins.nftset", "NftSetAction"),
         "f2b_ipset": ("plugins.ipset_net", "IpsetNetAction"),
         "f2b_fleet": ("plugins.fleet", "FleetAction")}
TOP = {"__init__", "__main__", "errors", "shipped"}

MAY_IMPORT = {
    "errors": set(),
    "shipped": {"errors"},
    "core": {"core", "errors"},
    "system": {"system", "core", "errors", "shipped"},
    "plugins": {"plugins", "system", "core", "errors", "shipped"},
    "lab": {"lab", "plugins", "system", "core", "errors", "shipped"},
    "cli": {"cli", "lab", "plugins", "system", "core", "errors", "shipped"},
    "shim": {"plugins"},
    "__main__": {"cli"},
    "__init__": set(),
}
# what the core may take from the standard library: computation only (time: as a value,
# or to format one)
CORE_STDLIB = {"__future__", "abc", "ast", "bisect", "collections", "dataclasses", "datetime", "difflib", "enum",
               "functools", "hashlib", "heapq", "ipaddress", "itertools", "json", "math", "operator", "re",
               "string", "struct", "textwrap", "time", "typing"}


def part(name: str) -> str:
    first = name.split(".")[0]
    if first in PARTS:
        return first
    if first in SHIMS:
        return "shim"
    assert first in TOP, f"f2b_ext/{name.replace('.', '/')}.py is in no part of the layout"
    return first


def imports(name: str, top_level_only: bool = False) -> set[str]:
    source = MODULES[name]
    if top_level_only:      # statements at module level (not inside a function or class)
        tree = ast.parse(source)
        source = "\n".join(ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    return {m for n in plan.imported_modules(source, module=name) for m in plan.resolve(n, MODULES)} - {name}


def external(name: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(MODULES[name])):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module.split(".")[0])
    return found - {"f2b_ext"}


def test_every_module_is_in_a_part_and_every_part_is_a_package():
    assert {part(m) for m in MODULES} >= set(PARTS)
    assert all(f"{p}.__init__" in MODULES for p in PARTS)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_import_rules(name):
    wrong = sorted(m for m in imports(name) if part(m) not in MAY_IMPORT[part(name)])
    assert wrong == [], f"{name} ({part(name)}) may import only {sorted(MAY_IMPORT[part(name)])}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if part(m) == "core"))
def test_the_core_does_no_io_and_never_imports_fail2ban(name):
    assert external(name) - CORE_STDLIB == set()


def test_the_command_line_imports_the_lab_only_from_inside_the_demo_command():
    at_top = {m for m in MODULES if part(m) == "cli" and any(part(i) == "lab" for i in imports(m, top_level_only=True))}
    anywhere = {m for m in MODULES if part(m) == "cli" and any(part(i) == "lab" for i in imports(m))}
    assert at_top == set() and anywhere == {"cli.demo"}


def test_nothing_but_the_command_line_imports_it():
    users = {m for m in MODULES if part(m) not in ("cli", "__main__") and any(part(i) == "cli" for i in imports(m))}
    assert users == set()


def test_the_plugins_are_exactly_what_the_actions_reach():
    reached, todo = set(), [m for a in (ROOT / "action.d").glob("*.py") for n in plan.imported_modules(a.read_text())
                            for m in plan.resolve(n, MODULES)]
    assert todo and all(part(m) == "plugins" for m in todo), todo          # action.d imports plugins only
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo += imports(name)
    assert {m for m in MODULES if part(m) == "plugins"} <= reached
    assert not any(part(m) in ("cli", "lab") for m in reached)


# a module of f2b_ext is bound under its own name, or under this one short name (the same
# everywhere); never under a name from before the layout (fleetinit, synwatcher, ...)
SHORT_NAMES = {"core.netfilter": "nf", "core.synwatch": "sw", "core.dependencies": "deps", "core.install": "plan"}


def module_bindings() -> dict[str, set[tuple[str, str]]]:
    """{module of f2b_ext: {(local name, importing module)}} of every import that binds
    a module of f2b_ext to a name, anywhere in the package (functions included)."""
    found: dict = {}
    for importer, source in MODULES.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                pairs = [(a.name.removeprefix("f2b_ext."), a.asname) for a in node.names
                         if a.name.startswith("f2b_ext.") and a.asname]
            elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "f2b_ext":
                inside = node.module.removeprefix("f2b_ext").lstrip(".")
                pairs = [(f"{inside}.{a.name}".lstrip("."), a.asname or a.name) for a in node.names]
            else:
                continue
            for module, local in pairs:
                if module in MODULES:
                    found.setdefault(module, set()).add((local, importer))
    return found


def test_a_module_is_imported_under_one_name_that_says_what_it_is():
    bindings = module_bindings()
    assert {"core.netfilter", "system.fleet_init", "shipped"} <= set(bindings)     # the reader sees imports
    wrong = {module: sorted(pairs) for module, pairs in bindings.items()
             if {local for local, _ in pairs} - {module.split(".")[-1], SHORT_NAMES.get(module)}}
    assert wrong == {}, f"imported under another name than its own or SHORT_NAMES': {wrong}"


def test_setup_cfg_lists_every_package():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    on_disk = {"f2b_ext"} | {f"f2b_ext.{p}" for p in PARTS}
    assert listed == on_disk == {"f2b_ext." + m[:-len(".__init__")] for m in MODULES if m.endswith(".__init__")} | {"f2b_ext"}


@pytest.mark.fail2ban                     # the plugins import fail2ban
@pytest.mark.parametrize("old", sorted(SHIMS))
def test_the_old_import_paths_still_resolve(old):
    new, cls = SHIMS[old]
    module = importlib.import_module(f"f2b_ext.{old}")
    assert module is importlib.import_module(f"f2b_ext.{new}")
    assert getattr(module, cls) is getattr(importlib.import_module(f"f2b_ext.{new}"), cls)
    assert old in plan.OLD_ACTION_PATHS                      # and `install` copies it for fail2ban


# the import line of each action.d file before this layout, as an admin's edited copy keeps it
OLD_ACTION_LINES = {
    "subnet-escalate.py": "from f2b_ext.f2b_action import SubnetEscalateAction as Action  # noqa: F401",
    "nftset.py": "from f2b_ext.f2b_nftset import NftSetAction as Action  # noqa: F401",
    "ipset-net.py": "from f2b_ext.f2b_ipset import IpsetNetAction as Action  # noqa: F401",
    "fleet.py": "from f2b_ext.f2b_fleet import FleetAction as Action  # noqa: F401",
}


@pytest.mark.fail2ban
@pytest.mark.parametrize("action", sorted(OLD_ACTION_LINES))
def test_an_action_file_with_the_old_import_loads_in_fail2ban(tmp_path, action):
    """fail2ban's own loader (Actions._load_python_module) on a copy of the shipped file
    whose import line is the old one: the same Action class."""
    from fail2ban.server import actions
    shipped = (ROOT / "action.d" / action).read_text()
    line = next(ln for ln in shipped.splitlines() if ln.startswith("from f2b_ext."))
    kept = tmp_path / action
    kept.write_text(shipped.replace(line, OLD_ACTION_LINES[action]))
    old = actions.Actions._load_python_module(str(kept)).Action
    new = actions.Actions._load_python_module(str(ROOT / "action.d" / action)).Action
    assert old is new

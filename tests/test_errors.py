"""The one error hierarchy (f2b_ext/errors.py): every exception class the package defines
is an F2bExtError, its message is one line, and the command line prints it as one line
with a non-zero exit."""
from __future__ import annotations

import importlib
import pkgutil

import pytest

import f2b_ext
from f2b_ext.errors import CliError, F2bExtError


def every_module():
    for info in pkgutil.walk_packages(f2b_ext.__path__, "f2b_ext."):
        if not info.name.endswith(".__main__"):            # that one runs the command
            yield importlib.import_module(info.name)


@pytest.mark.fail2ban          # imports every module, the fail2ban actions too
def test_every_exception_the_package_defines_is_an_f2bext_error():
    defined = {(m.__name__, name): obj for m in every_module() for name, obj in vars(m).items()
               if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == m.__name__}
    assert len(defined) >= 10, defined         # the package's own, not the ones it imports
    outside = sorted(f"{mod}.{name}" for (mod, name), cls in defined.items() if not issubclass(cls, F2bExtError))
    assert outside == []


def test_the_built_in_kind_is_kept_so_old_handlers_still_catch():
    from f2b_ext.core import synwatch
    from f2b_ext.core.escalation import ConfigError
    from f2b_ext.core.fleet import EventError
    assert issubclass(ConfigError, ValueError) and issubclass(EventError, ValueError)
    err = synwatch.DiagError(5, "sock_diag dump failed (errno 5)")
    assert isinstance(err, OSError) and err.errno == 5 and str(err) == "[Errno 5] sock_diag dump failed (errno 5)"


def test_the_message_is_one_line_and_the_rest_is_detail():
    err = F2bExtError("fail2ban-server exited 255: \nline 1\nline 2\n")
    assert str(err) == "fail2ban-server exited 255: " and err.detail == "line 1\nline 2"
    assert err.__notes__ == ["line 1\nline 2"]          # tracebacks and pytest still show it
    assert str(CliError("one line")) == "one line" and CliError("x").detail == "" and not hasattr(CliError("x"), "__notes__")


@pytest.mark.parametrize("argv, says", [
    (["report", "/nonexistent/netfilter.log"], "/nonexistent/netfilter.log: no such file"),
    (["report", "--bogons", "10.0.0.0/33", "/dev/null"], "bogons"),
    (["report", "--journal", "/dev/null"], "give one LOGFILE or --journal"),
    (["fleet", "status", "--status", "/nonexistent.json"], "no status at /nonexistent.json"),
])
def test_a_cli_error_is_one_line_and_a_non_zero_exit(capsys, argv, says):
    from f2b_ext.cli import main
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("f2b-ext: ") and says in err, err

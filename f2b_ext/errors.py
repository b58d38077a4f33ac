"""The one error hierarchy: every error f2b-ext raises on purpose is an `F2bExtError`.

How it works: an error's message is one line that says what went wrong and where; the
command line prints it after `f2b-ext: ` and exits non-zero (never a traceback), and
fail2ban logs it on one line. What does not fit on a line (a command's output, a log's
tail) is the message's further lines: `str()` is the first line only, `detail` the rest,
which also travels as the exception's note (tracebacks and pytest show it).

Each class lives with the concern that raises it and also derives from the built-in
exception that says what kind of failure it is, so `except ValueError` still catches bad
input and `except OSError` a failed system call:

    F2bExtError
      bad input (ValueError)       ConfigError (core.escalation: a parameter),
                                   SampleError (core.samples: a sample log),
                                   EventError (core.fleet: a fleet event or config)
      this machine (RuntimeError)  DataMissing (shipped: no package data),
                                   Fail2banMissing (fail2ban not importable),
                                   InstallError (install / uninstall stopped),
                                   BackendError (a set action cannot write the kernel's sets),
                                   LabError, ServerError (the lab, its private fail2ban)
      the kernel (OSError)         DiagError (sock_diag answered an error)
      the running fail2ban         Fail2banError (unreachable, refusing, or not root's)
      the command line             CliError (a command's own check of its arguments)

tests/test_errors.py fails if a module defines an exception outside this hierarchy.
"""
from __future__ import annotations


class F2bExtError(Exception):
    """An error f2b-ext raises on purpose; `str()` is one line, `detail` the rest."""

    def __init__(self, *args):
        super().__init__(*args)
        if self.detail:
            self.add_note(self.detail)

    def _text(self) -> str:
        return super().__str__().strip("\n")

    def __str__(self) -> str:
        return self._text().split("\n", 1)[0]

    @property
    def detail(self) -> str:
        return self._text().partition("\n")[2]


class CliError(F2bExtError):
    """The command line's own check of what it was given (exit status 2)."""

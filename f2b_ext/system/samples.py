"""Sample logs in fail2ban's failJSON convention: reading them into plain cases.

How it works: a sample file is log lines, each optionally preceded by
`# failJSON: {"time": ..., "match": true, "host": ...}`; `# filterOptions: {...}` (one
dict or a list of dicts) switches the filter options for the lines that follow, exactly
as fail2ban's `tests/samplestestcase.py` reads them. `read_cases()` turns a file into
`Case` objects; running them is the caller's business (tests, `f2b-ext test`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from f2b_ext.errors import F2bExtError

_DIRECTIVE = re.compile(r"^#+ ?(failJSON|filterOptions|fileOptions):(.+)$")


class SampleError(F2bExtError, ValueError):
    pass


@dataclass(frozen=True)
class Case:
    path: str
    lineno: int
    line: str
    expect: dict            # the failJSON dict ({} when the line has none: must not match)
    options: dict = field(default_factory=dict)   # filter options in force

    @property
    def should_match(self) -> bool:
        return bool(self.expect.get("match", False))

    @property
    def captures(self) -> dict:
        """Expected values besides time/match/desc/constraint (host, prefix, proto ...)."""
        return {k: v for k, v in self.expect.items()
                if k not in ("time", "match", "desc", "constraint")}


def read_cases(path: str | Path) -> list[Case]:
    path = Path(path)
    cases: list[Case] = []
    common: dict = {}
    option_sets: list[dict] = [{}]
    pending: dict | None = None
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            m = _DIRECTIVE.match(line)
            if m:
                try:
                    data = json.loads(m.group(2))
                except ValueError as exc:
                    raise SampleError(f"{path}:{lineno}: bad JSON: {exc}") from None
                kind = m.group(1)
                if kind == "fileOptions":
                    common = data
                elif kind == "filterOptions":
                    option_sets = [dict(common, **d) for d in (data if isinstance(data, list) else [data])]
                else:
                    pending = data
                continue
            if line.startswith("#") or not line.strip():
                continue
            for opts in option_sets:
                cases.append(Case(str(path), lineno, line, pending or {}, opts))
            pending = None
    return cases

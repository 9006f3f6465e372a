"""Saved queries: named SQL files analysts run with ``raiwatch query --saved NAME``.

The shipped ones are in ``storage/clickhouse/saved/``; ``queries_dir`` in the config adds a folder
of one's own (a file there with a shipped name replaces it). A file's first line is a ``--``
comment that says what it answers. Parameters are ClickHouse's ``{name:Type}``; a ``String`` one
not given is ``''``, which the shipped queries read as "all" (``{model_id:String} = '' OR ...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from raiwatch.core.errors import RaiwatchError

SHIPPED = Path(__file__).resolve().parent / "saved"
_PARAM = re.compile(r"\{(\w+):([^}]+)\}")


@dataclass(frozen=True)
class SavedQuery:
    name: str
    description: str
    sql: str
    path: Path

    @property
    def params(self) -> dict[str, str]:
        """Parameter name -> ClickHouse type, in order of first use."""
        return {name: kind.strip() for name, kind in _PARAM.findall(self.sql)}

    def bind(self, given: dict[str, str]) -> dict[str, str]:
        """The values to send: ``given``, with ``''`` for String parameters not given."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise RaiwatchError(
                f"saved query {self.name!r} has no parameter {unknown[0]!r}; it takes "
                f"{', '.join(self.params) or 'none'}"
            )
        out = dict(given)
        for name, kind in self.params.items():
            if name not in out:
                if kind != "String":
                    raise RaiwatchError(f"saved query {self.name!r} needs --param {name}=... ({kind})")
                out[name] = ""
        return out


def saved_queries(extra: str | Path | None = None) -> dict[str, SavedQuery]:
    """Every saved query by name: the shipped ones, then those of ``extra`` (which win)."""
    folders = [SHIPPED] + ([Path(extra)] if extra else [])
    found: dict[str, SavedQuery] = {}
    for folder in folders:
        if not folder.is_dir():
            raise RaiwatchError(f"queries_dir {folder} is not a folder")
        for f in sorted(folder.glob("*.sql")):
            text = f.read_text()
            first = text.splitlines()[0] if text else ""
            description = first[2:].strip() if first.startswith("--") else ""
            found[f.stem] = SavedQuery(f.stem, description, text.strip().rstrip(";"), f)
    return found


def saved_query(name: str, extra: str | Path | None = None) -> SavedQuery:
    """The saved query ``name``; a one-line error listing the others when there is none."""
    queries = saved_queries(extra)
    if name not in queries:
        raise RaiwatchError(f"no saved query {name!r}; there are: {', '.join(sorted(queries))}")
    return queries[name]

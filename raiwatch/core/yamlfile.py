"""YAML from users (config, rules, rule tests, scenarios), read with bounds.

A YAML document is a graph: ten aliases of ten aliases of ... ("billion laughs") compose in
microseconds and expand to 10^9 nodes in whatever walks them next (a schema check, a converter).
Every user's YAML the project reads goes through ``read``/``load``/``compose`` here, which refuse,
before anything walks it, a file over ``MAX_BYTES``, more than ``MAX_ALIASES`` aliases, a document
that would expand to more than ``MAX_NODES`` nodes, nesting deeper than ``MAX_DEPTH`` and an alias
inside its own anchor. The refusal is a ``YAMLLimitError`` (a ``yaml.MarkedYAMLError``: it carries
the line), so callers report it as they report a syntax error.

>>> load("a: &x [1, 2]\\nb: *x\\n")
{'a': [1, 2], 'b': [1, 2]}
>>> bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\\n" + "".join(
...     f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\\n" for p, c in zip("abcdefgh", "bcdefghi"))
>>> try:
...     load(bomb)
... except YAMLLimitError as e:
...     print(f"line {e.problem_mark.line + 1}: {e.problem}")
line 6: too large once aliases are expanded: more than 200,000 nodes
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

MAX_BYTES = 4 * 1024 * 1024  # a rule folder's largest file is ~10 KB; a generated one may be far larger
MAX_NODES = 200_000  # expanded: ~5,000 rules; each alias counts the nodes it stands for
MAX_ALIASES = 1_000
MAX_DEPTH = 100


class YAMLLimitError(yaml.MarkedYAMLError):
    """A document over one of the bounds; ``problem`` says which, ``problem_mark`` where."""


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting what the document expands to while it is composed."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0  # nodes of the document once every alias is expanded
        self._depth = 0
        self._open: set[str] = set()  # anchors whose node is being composed
        self._sizes: dict[int, int] = {}  # id(node) -> its expanded size

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        if self.check_event(AliasEvent):
            event = self.peek_event()
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YAMLLimitError(None, None, f"more than {MAX_ALIASES:,} aliases", event.start_mark)
            if event.anchor in self._open:
                raise YAMLLimitError(
                    None, None, f"alias *{event.anchor} inside its own anchor (a recursive document)",
                    event.start_mark,
                )  # fmt: skip
            node = super().compose_node(parent, index)
            self._count(self._size(node), event.start_mark)
            return node
        event = self.peek_event()
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLLimitError(None, None, f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._count(1, event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor)  # type: ignore[arg-type]

    def _count(self, n: int, mark: yaml.Mark) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise YAMLLimitError(
                None, None, f"too large once aliases are expanded: more than {MAX_NODES:,} nodes", mark
            )

    def _size(self, node: yaml.Node) -> int:
        """Nodes under ``node`` with aliases expanded (memoised: linear in the composed graph)."""
        known = self._sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(self._size(k) + self._size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(self._size(v) for v in node.value)
        else:
            n = 1
        self._sizes[id(node)] = n
        return n


def read(path: str | os.PathLike) -> str:
    """The text of a user's YAML file; ``YAMLLimitError`` past ``MAX_BYTES`` (not read further),
    ``UnicodeDecodeError`` when it is not UTF-8, ``OSError`` when it cannot be read."""
    with Path(path).open("rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise YAMLLimitError(None, None, f"larger than {MAX_BYTES:,} bytes", None)
    return data.decode("utf-8")


def compose(text: str | bytes) -> yaml.Node | None:
    """The node graph of one document (None when empty), bounded; for callers that need lines."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def construct(node: yaml.Node | None) -> Any:
    """The Python value of a node graph from ``compose`` (plain dicts, lists and scalars)."""
    if node is None:
        return None
    loader = BoundedLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load(text: str | bytes) -> Any:
    """One document as Python values (``yaml.safe_load``, bounded)."""
    return construct(compose(text))


def load_file(path: str | os.PathLike) -> Any:
    """``load(read(path))``."""
    return load(read(path))


def describe(e: yaml.YAMLError) -> str:
    """One line for a user: ``line N: problem`` (PyYAML's own text spans several lines)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if problem is None:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    refused = "refused: " if isinstance(e, YAMLLimitError) else ""
    return f"line {mark.line + 1}: {refused}{problem}" if mark else f"{refused}{problem}"


def file_problem(path: object, e: yaml.YAMLError | UnicodeDecodeError) -> str:
    """``FILE:LINE: YAML refused: ...`` (over a bound) or ``FILE:LINE: YAML syntax error: ...``,
    with PyYAML's context line where it gives one: how a linter names a file it cannot read."""
    mark = getattr(e, "problem_mark", None)
    line = mark.line + 1 if mark else 1
    if isinstance(e, YAMLLimitError):
        return f"{path}:{line}: YAML refused: {e.problem}"
    why = getattr(e, "problem", None) or e
    context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and context_mark:
        why = f"{why} ({context} on line {context_mark.line + 1})"
    return f"{path}:{line}: YAML syntax error: {why}"

"""YAML loading that remembers where every value came from.

PyYAML's `safe_load` throws positions away and silently keeps the last of two
duplicate keys. We compose the node graph ourselves so that every key path maps
to its (line, column) and duplicates become located errors.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MixcError

KeyPath = tuple[Any, ...]
MAX_VALUES = 1_000_000  # far beyond any real spec file


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


class SpecError(MixcError):
    """A problem in a spec file, located at file:line:column and a key path."""

    def __init__(self, message: str, location: Location | None = None, key: str | None = None):
        super().__init__(message)
        self.message = message
        self.location = location
        self.key = key

    def __str__(self) -> str:
        # file:line:column: error: key: message -- the shape editors and CI annotators parse.
        where = f"{self.location}: " if self.location else ""
        key = f"{self.key}: " if self.key else ""
        return f"{where}error: {key}{self.message}"


class SpecErrors(MixcError):
    """Several located problems found in one pass."""

    def __init__(self, errors: list[SpecError]):
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


@dataclass
class Located:
    """Plain Python data plus a map from key path to source position."""

    data: Any
    file: str
    positions: dict[KeyPath, Location] = field(default_factory=dict)

    def where(self, path: KeyPath) -> Location:
        """The position of `path`, or of its nearest located ancestor."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), Location(self.file, 1, 1))


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as 5e-05 (YAML 1.1 wants '5.0e-05').

    Published weights are written like 5e-05; reading them as strings would be a trap.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.?[0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def key_path(path: KeyPath) -> str:
    """('phases', 2, 'steps') -> 'phases[2].steps': the form every error message uses."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _mark(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(node: yaml.Node, file: str, path: KeyPath, positions: dict, loader: _Loader, active: frozenset = frozenset()) -> Any:
    positions.setdefault(path, _mark(file, node))
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
        # An alias may point at one of its own ancestors ('a: &x [*x]'): that data is infinite.
        if id(node) in active:
            raise SpecError("recursive YAML alias (an anchor refers to itself)", _mark(file, node), key_path(path) or None)
        active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise SpecError("mapping keys must be plain scalars", _mark(file, key_node))
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                first = positions.get(path + (key,))
                raise SpecError(
                    f"duplicate key '{key}' (first defined at line {first.line})" if first else f"duplicate key '{key}'",
                    _mark(file, key_node),
                    key=key_path(path + (key,)),
                )
            positions[path + (key,)] = _mark(file, key_node)
            out[key] = _convert(value_node, file, path + (key,), positions, loader, active)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, file, path + (i,), positions, loader, active) for i, item in enumerate(node.value)]
    try:
        return loader.construct_object(node, deep=True)
    except ValueError as exc:  # a bad date, or an integer of more digits than Python converts
        problem = "an integer of thousands of digits" if "integer string conversion" in str(exc) else str(exc)
        raise SpecError(f"malformed YAML value: {problem}", _mark(file, node), key_path(path) or None) from None


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values the node graph becomes once aliases are copied out, counted without
    copying: aliases of aliases can make a few lines expand exponentially ('billion laughs')."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 0  # in progress: a recursive alias counts once here; _convert reports it
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    memo[id(node)] = size = 1 + sum(_expanded_size(child, memo) for child in children)
    return size


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    """PyYAML's message plus what usually caused it: tabs, indentation, an unclosed bracket."""
    problem = exc.problem or exc.context or "malformed YAML"
    context = exc.context or ""
    if "'\\t'" in problem:
        return f"{problem} (indent with spaces, not tabs)"
    if problem.startswith("mapping values are not allowed"):
        return f"{problem} (check the indentation, or quote a value that contains ': ')"
    if context.startswith("while parsing a flow") and exc.context_mark is not None:
        opener = "[" if "sequence" in context else "{"
        return f"{problem} (the '{opener}' opened at line {exc.context_mark.line + 1} is not closed)"
    if context.startswith("while scanning a quoted scalar") and exc.context_mark is not None:
        return f"{problem} (the quote opened at line {exc.context_mark.line + 1} is not closed)"
    if context and not context.startswith("while") and exc.problem:
        return f"{context}, {problem}"  # e.g. 'expected a single document in the stream, but found another document'
    return problem


def load_text(text: str, file: str) -> Located:
    """Parse YAML text; malformed YAML becomes a located SpecError."""
    try:
        loader = _Loader(text)  # the reader checks every character here, before parsing
    except yaml.reader.ReaderError as exc:
        raise _reader_error(exc, text, file) from None
    try:
        node = loader.get_single_node()
        positions: dict[KeyPath, Location] = {}
        if node is not None and _expanded_size(node, {}) > MAX_VALUES:
            raise SpecError(f"the YAML expands to more than {MAX_VALUES:,} values (aliases of aliases?)", _mark(file, node))
        data = None if node is None else _convert(node, file, (), positions, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        raise SpecError(f"malformed YAML: {_yaml_problem(exc)}", loc) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", Location(file, 1, 1)) from None
    except RecursionError:
        raise SpecError("malformed YAML: nested too deeply", Location(file, 1, 1)) from None
    finally:
        loader.dispose()
    return Located(data, file, positions)


def _reader_error(exc: yaml.reader.ReaderError, text: str, file: str) -> SpecError:
    """A character YAML does not allow (NUL, other control characters): where it is, and which."""
    where = exc.position if isinstance(exc.position, int) else 0
    line = text.count("\n", 0, where) + 1
    column = where - (text.rfind("\n", 0, where) + 1) + 1
    return SpecError(f"malformed YAML: control character U+{exc.character:04X} is not allowed in YAML text "
                     "(a binary file, or a stray control character?)", Location(file, line, column))


def load_file(path: str | Path) -> Located:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError("file not found", Location(str(path), 1, 1)) from None
    except IsADirectoryError:
        raise SpecError("is a directory, expected a YAML file", Location(str(path), 1, 1)) from None
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror}", Location(str(path), 1, 1)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError(f"not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                        Location(str(path), line, column)) from None
    # A catalog is read once per mix that names it, and PyYAML is slow: parse each distinct
    # (name, content) once. Callers get their own copy of the data.
    cache_key = (str(path), hashlib.sha1(raw).digest())
    located = _parsed.get(cache_key)
    if located is None:
        located = load_text(text, str(path))
        _parsed[cache_key] = located
        while len(_parsed) > _PARSED_MAX:
            _parsed.popitem(last=False)
    else:
        _parsed.move_to_end(cache_key)
    return Located(copy.deepcopy(located.data), located.file, dict(located.positions))


_PARSED_MAX = 64
_parsed: OrderedDict[tuple[str, bytes], Located] = OrderedDict()

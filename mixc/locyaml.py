"""YAML loading that remembers where every value came from.

PyYAML's `safe_load` throws positions away and silently keeps the last of two
duplicate keys. We compose the node graph ourselves so that every key path maps
to its (line, column) and duplicates become located errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MixcError

KeyPath = tuple[Any, ...]


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


def _mark(file: str, node: yaml.Node) -> Location:
    return Location(file, node.start_mark.line + 1, node.start_mark.column + 1)


def _convert(node: yaml.Node, file: str, path: KeyPath, positions: dict, loader: _Loader) -> Any:
    positions.setdefault(path, _mark(file, node))
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
                    key=".".join(map(str, path + (key,))),
                )
            positions[path + (key,)] = _mark(file, key_node)
            out[key] = _convert(value_node, file, path + (key,), positions, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, file, path + (i,), positions, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def load_text(text: str, file: str) -> Located:
    """Parse YAML text; malformed YAML becomes a located SpecError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        positions: dict[KeyPath, Location] = {}
        data = None if node is None else _convert(node, file, (), positions, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        problem = exc.problem or exc.context or "malformed YAML"
        raise SpecError(f"malformed YAML: {problem}", loc) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"malformed YAML: {exc}", Location(file, 1, 1)) from None
    finally:
        loader.dispose()
    return Located(data, file, positions)


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
        raise SpecError(f"not UTF-8 text (byte {exc.start})", Location(str(path), line, 1)) from None
    return load_text(text, str(path))

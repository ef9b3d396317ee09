"""The shape of the code a newcomer relies on: every package is in the README's layout table,
imports point down the passes, the shard format's token-size rule has one definition, and no
module or function outgrows a reader (500 lines of code, 80 lines)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mixc"

# The passes, bottom first. A module may import from its own unit (a top-level module, or a
# package and everything in it) and from units of earlier layers, never from a later layer or
# from another unit of its own layer. `mixc` itself only holds __version__.
LAYERS: list[tuple[str, ...]] = [
    ("mixc", "errors", "text", "environ"),
    ("locyaml",),
    ("schema",),
    ("spec",),
    ("plan", "sample"),
    ("project", "store", "validate", "diff"),
    ("blend",),
    ("packing",),
    ("loader",),
    ("streams",),
    ("shards",),
    ("memory", "eval"),
    ("train",),
    ("interop",),
    ("report",),
    ("experiments",),
    ("cli",),
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mixc"


def _is_main_block(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` runs a module as a script: an entry point, not a dependency."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _mixc_imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported mixc module) for every import, top-level or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_main_block(child):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target == "mixc" or target.startswith("mixc."):
                    # `from . import checkpoint` imports a module of the package
                    found.extend((child.lineno, f"{target}.{a.name}" if target == package else target) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names if a.name.split(".")[0] == "mixc")
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_every_unit_of_the_package_has_a_declared_layer():
    undeclared = sorted({_unit(m) for m, _ in _modules()} - set(LAYER))
    assert not undeclared, f"declare these in LAYERS (and in docs/architecture.md): {undeclared}"


def test_no_module_imports_upward():
    upward = []
    for module, path in _modules():
        mine = _unit(module)
        for line, target in _mixc_imports(module, path):
            theirs = _unit(target)
            if theirs != mine and LAYER.get(theirs, -1) >= LAYER.get(mine, -1):
                upward.append(f"{path.relative_to(REPO)}:{line} ({mine}) imports {target} ({theirs})")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check itself: a store that imported the loader would be caught."""
    path = tmp_path / "store.py"
    path.write_text("from .loader import SourceStream\n\ndef f():\n    from .cli import main\n")
    assert [t for _, t in _mixc_imports("mixc.store", path)] == ["mixc.loader", "mixc.cli"]


def test_every_package_is_in_the_readme_layout_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What's in the repository", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `([^`]+)`", section, flags=re.M))
    packages = sorted(f"mixc/{p.name}/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    missing = [p for p in packages if p not in listed]
    assert not missing, f"README's layout table lacks {missing}"
    stale = sorted(p for p in listed if p.startswith("mixc/") and not (REPO / p).exists())
    assert not stale, f"README's layout table names paths that do not exist: {stale}"


def test_the_architecture_page_names_a_module_that_exists_for_each_concept():
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(mixc/[\w/]+(?:\.py|/))`", page))
    assert named and all((REPO / p).exists() for p in named), sorted(p for p in named if not (REPO / p).exists())


# Numbers and dtypes that decide how wide a token (or an index entry) is on disk. Only mixc/store.py may spell them;
# everyone else asks it (token_size_for, token_dtype, TOKEN_SIZES, INDEX_DTYPE). Other 65,536s are not about
# token ids: listed here with what they are.
TOKEN_WIDTH_NUMBERS = {65535, 65536}
UNRELATED = {
    ("mixc/train/configs.py", "max_position_embeddings"),  # SmolLM3's longest context, in tokens
    ("mixc/blend.py", "CACHE_BATCH_LIMIT"),  # a batch size
}


def _token_width_spellings(path: Path, rel: str | None = None) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = rel or str(path.relative_to(REPO))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            names = {t.id if isinstance(t, ast.Name) else getattr(t, "attr", None) for t in targets}
            if any((rel, n) in UNRELATED for n in names):
                continue
        for sub in ast.walk(node) if isinstance(node, ast.Assign | ast.AnnAssign | ast.Expr | ast.Return | ast.Compare
                                                 | ast.Call | ast.IfExp) else ():
            if isinstance(sub, ast.Constant) and type(sub.value) is int and sub.value in TOKEN_WIDTH_NUMBERS:
                out.append(f"{rel}:{sub.lineno}: {sub.value}")
            if isinstance(sub, ast.Attribute) and sub.attr == "uint16":
                out.append(f"{rel}:{sub.lineno}: uint16")
            if isinstance(sub, ast.Constant) and sub.value in ("<u2", "<u4", "<u8", "u2", "u4", "uint16"):
                out.append(f"{rel}:{sub.lineno}: {sub.value!r}")
    return sorted(set(out))


def test_the_token_size_rule_has_one_definition():
    spelled = [s for _, path in _modules() if path != PACKAGE / "store.py" for s in _token_width_spellings(path)]
    assert not spelled, "token width decided outside mixc/store.py:\n" + "\n".join(spelled)
    assert _token_width_spellings(PACKAGE / "store.py"), "mixc/store.py should define the rule"


@pytest.mark.parametrize("text", ["size = 2 if vocab <= 65536 else 4\n", "dtype = np.uint16\n", "d = np.dtype('<u2')\n"])
def test_the_one_definition_check_sees_a_copy(tmp_path, text):
    path = tmp_path / "copy.py"
    path.write_text(text)
    assert _token_width_spellings(path, "mixc/copy.py")


def test_the_command_line_loads_without_torch_or_datatrove():
    """Heavy dependencies stay behind function-local imports: `mixc validate`, `plan` or `report`
    never pay for torch or datatrove."""
    import subprocess
    import sys

    code = "import sys, mixc.cli; print(' '.join(m for m in ('torch', 'datatrove', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"importing mixc.cli loads {done.stdout.strip()}"


# The target shape: a module a reader can hold in mind, functions that fit on a screen.
MAX_MODULE_CODE_LINES = 500
MAX_FUNCTION_LINES = 80


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(text: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - _docstring_lines(ast.parse(text)))


def long_functions(text: str, rel: str) -> list[str]:
    """Functions (methods and nested ones too) longer than MAX_FUNCTION_LINES, from `def` to their last line."""
    return [f"{rel}:{node.lineno} {node.name}() is {node.end_lineno - node.lineno + 1} lines"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]


def test_no_module_is_over_500_lines_of_code():
    big = [f"{path.relative_to(REPO)}: {n} lines of code" for _, path in _modules()
           if (n := code_lines(path.read_text(encoding="utf-8"))) > MAX_MODULE_CODE_LINES]
    assert not big, f"split these (at most {MAX_MODULE_CODE_LINES} lines of code each):\n" + "\n".join(big)


def test_no_function_is_over_80_lines():
    long = [f for _, path in _modules() for f in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))]
    assert not long, "split these functions:\n" + "\n".join(long)


def test_the_size_checks_count_code_and_see_a_long_function():
    text = '"""A docstring\n\nover lines."""\n\n# a comment\nx = 1  # code\n\n\ndef f():\n    """Doc."""\n    return (1,\n            2)\n'
    assert code_lines(text) == 4  # x = 1, def f(), and the two lines of the return
    body = "\n".join(f"    y{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def short():\n    pass\n\n\ndef g():\n{body}\n", "m.py") == [f"m.py:5 g() is {MAX_FUNCTION_LINES + 1} lines"]

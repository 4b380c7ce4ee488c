"""The code's shape, checked: data flows one way and format knowledge stays in `formats/`.

* no import cycles among the imports a module runs when it is imported (function-level imports
  are deliberate: they keep start-up fast and cannot form a cycle at import time);
* no module imports another module's ``_private`` names;
* no module above `formats/` tests a format name (``checkpoint.format == "gguf"``) or reads a
  format's raw metadata (``checkpoint.metadata.get("gguf")``): that knowledge is the reader's.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "unshell"
FORMAT_NAMES = {"gguf", "safetensors", "pytorch", "onnx", "llama2c", "meta-pth", "hf_cache", "params"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if not node.level:
        return node.module or ""
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_imports(module: str, path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            target = _target(module, path, node)
            for candidate in (target, *(f"{target}.{alias.name}" for alias in node.names)):
                if candidate in MODULES and candidate != module:
                    found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in MODULES}
    return found


def test_no_import_cycles() -> None:
    graph = {module: _top_level_imports(module, path) for module, path in MODULES.items()}
    # A module may import its own package's __init__ (Python has it half-built then); a cycle is
    # any other path that leads back to where it started.
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start and not start.startswith(node + "."):
                    raise AssertionError(" -> ".join((*trail, nxt)))
                if nxt not in seen and not start.startswith(nxt + "."):
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))


def test_no_module_imports_private_names() -> None:
    offenders = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [
                    a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")
                ]
                if private:
                    offenders.append(f"{module} imports {private} from {_target(module, path, node)}")
    assert offenders == []


def _format_tests(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Attribute)
            and node.left.attr == "format"
        ):
            constants = [c for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in FORMAT_NAMES]
            if constants:
                found.append(f"line {node.lineno}: .format compared with {constants[0].value!r}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "metadata"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in FORMAT_NAMES
        ):
            found.append(f"line {node.lineno}: metadata.get({node.args[0].value!r})")
    return found


def test_no_format_name_is_tested_above_formats() -> None:
    found = {}
    for module, path in MODULES.items():
        if module.startswith("unshell.formats"):
            continue
        count = len(_format_tests(ast.parse(path.read_text())))
        if count:
            found[module] = count
    assert found == {}


def test_the_checks_see_what_they_look_for() -> None:
    """The format check finds a format test when there is one (it cannot pass by seeing nothing)."""
    sample = 'if checkpoint.format == "gguf":\n    kv = checkpoint.metadata.get("gguf")\n'
    assert len(_format_tests(ast.parse(sample))) == 2
    assert _top_level_imports("unshell.model", MODULES["unshell.model"]) >= {"unshell.inspection"}


def test_no_subpackage_is_hidden_by_a_public_function() -> None:
    """`unshell.convert`, `.audit` and `.scan` are the verbs; their packages have names of their own,
    so attribute access reaches the submodules (it raised AttributeError when they shared names)."""
    import importlib

    import unshell

    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert not packages & set(unshell.__all__)
    for package in packages:
        importlib.import_module(f"unshell.{package}")
        assert getattr(unshell, package).__name__ == f"unshell.{package}"
    assert unshell.conversion.plan.__name__ == "unshell.conversion.plan"
    assert callable(unshell.convert) and callable(unshell.audit) and callable(unshell.scan)

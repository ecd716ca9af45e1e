"""The structure's rules, read from the source with ``ast`` so that they stay true:

* layers point one way: Sim3DR < runtime < calibration < export < benchmarks (the command line
  lives in runtime and reaches export and calibration through entry points); no module imports a
  higher layer, statically or dynamically (``import_module`` / ``__import__`` of any of our names);
* no import circle between files (every import counts, also inside functions; taking a name from a
  package's ``__init__.py`` imports that file);
* no private name (``_x``) taken from another module, except a module using the private helpers of
  its own package's ``__init__.py``;
* one module spells the models folder's manifest file name (docstrings aside).

Each rule is also run on planted violations, so a check that silently finds nothing fails.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("Sim3DR", "runtime", "calibration", "export", "benchmarks")
RANK = {name: rank for rank, name in enumerate(LAYERS)}
MANIFEST_OWNER = "runtime.models_folder"


class Source:
    """The modules of the five packages, parsed: ``{module name: (is a package, syntax tree)}``."""

    def __init__(self, files: dict[str, tuple[bool, str]]) -> None:
        self.packages = {name for name, (package, _) in files.items() if package}
        self.trees = {name: ast.parse(text) for name, (_, text) in files.items()}

    @classmethod
    def of_project(cls) -> "Source":
        files = {}
        for package in LAYERS:
            for path in sorted((ROOT / package).rglob("*.py")):
                parts = list(path.relative_to(ROOT).with_suffix("").parts)
                name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                files[name] = (path.name == "__init__.py", path.read_text())
        return cls(files)

    def resolve(self, importer: str, node: ast.ImportFrom) -> str | None:
        if not node.level:
            return node.module
        base = importer.split(".") if importer in self.packages else importer.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def imports(self, importer: str) -> list[tuple[str, str | None, int]]:
        """``(module, name taken from it or None, line)`` for every import of ours in ``importer``."""
        found = []
        for node in ast.walk(self.trees[importer]):
            if isinstance(node, ast.Import):
                found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] in RANK]
            elif isinstance(node, ast.ImportFrom):
                target = self.resolve(importer, node)
                if target and target.split(".")[0] in RANK:
                    for alias in node.names:
                        submodule = f"{target}.{alias.name}"
                        found.append((submodule, None, node.lineno) if submodule in self.trees
                                     else (target, alias.name, node.lineno))
        return found


def layer(module: str) -> int:
    return RANK[module.split(".")[0]]


def upward_imports(src: Source) -> list[str]:
    found = [f"{m}:{line} imports {target}" for m in src.trees for target, _, line in src.imports(m)
             if layer(target) > layer(m)]
    for m, tree in src.trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.args:
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in ("import_module", "__import__"):
                    arg = node.args[0]
                    name = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
                    if name is None or name.split(".")[0] in RANK:
                        found.append(f"{m}:{node.lineno} imports {name or 'a computed name'} dynamically")
    return found


def import_circles(src: Source) -> list[str]:
    graph = {m: sorted({t for t, _, _ in src.imports(m) if t in src.trees and t != m}) for m in src.trees}
    state: dict[str, int] = {}
    circles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return circles


def borrowed_private_names(src: Source) -> list[str]:
    found = []
    for m in src.trees:
        own_package = m if m in src.packages else m.rsplit(".", 1)[0]
        for target, name, line in src.imports(m):
            taken = name if name is not None else target.rsplit(".", 1)[-1]
            source = target if name is not None else target.rsplit(".", 1)[0]
            if taken.startswith("_") and not taken.startswith("__") and source != own_package:
                found.append(f"{m}:{line} takes {taken} from {source}")
    return found


def manifest_spellers(src: Source) -> list[str]:
    """Modules with a string (not a docstring) that contains the manifest's file name."""
    found = set()
    for m, tree in src.trees.items():
        docs = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        if any(isinstance(n, ast.Constant) and isinstance(n.value, str) and "models.json" in n.value and id(n) not in docs
               for n in ast.walk(tree)):
            found.add(m)
    return sorted(found)


PROJECT = Source.of_project()
PLANTED = Source({
    "runtime": (True, ""),
    "runtime.cache": (False, "from runtime.models_folder import check_models\n"),
    "runtime.models_folder": (False, '"""Names models.json."""\nfrom runtime.cache import _PARTIAL\nNAME = "models.json"\n'),
    "runtime.helpers": (False, "from . import _private_of_the_package\nfrom runtime import _check\n"),
    "runtime.cli": (False, "import export.cache\nimport importlib\nimportlib.import_module(NAMES[0])\n"
                           "__import__('calibration.cli')\n"),
    "export.cache": (False, "import runtime.cache\nHELP = 'see models.json'\n"),
})


def test_every_import_points_down():
    assert upward_imports(PROJECT) == []


def test_no_import_circles_between_files():
    assert import_circles(PROJECT) == []


def test_no_private_name_is_borrowed_from_another_module():
    assert borrowed_private_names(PROJECT) == []


def test_one_module_spells_the_manifest_file_name():
    assert manifest_spellers(PROJECT) == [MANIFEST_OWNER]


def test_the_rules_find_planted_violations():
    assert upward_imports(PLANTED) == ["runtime.cli:1 imports export.cache",
                                       "runtime.cli:3 imports a computed name dynamically",
                                       "runtime.cli:4 imports calibration.cli dynamically"]
    assert import_circles(PLANTED) == ["runtime.cache -> runtime.models_folder -> runtime.cache"]
    assert borrowed_private_names(PLANTED) == ["runtime.models_folder:2 takes _PARTIAL from runtime.cache"]
    assert manifest_spellers(PLANTED) == ["export.cache", "runtime.models_folder"]


def test_tests_share_code_through_helpers_only():
    """A test module imports tests.helpers (or the product), never another test module or the
    conftest, also in the scripts it hands to child processes."""
    found = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(from|import)\s+tests\.(test_\w+|conftest)\b", line):
                found.append(f"tests/{path.name}:{n}: {line.strip()}")
    assert found == []

"""The layers stay layered: stages on top of the library packages, which never import a stage;
no two packages import each other; the report loads no model code."""

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import cardiofair

SOURCE = Path(cardiofair.__file__).parent
LIBRARY = ("data", "diffusion", "masks", "metrics", "downstream", "report")
# What sits above the library: the stages, and what runs them.
ABOVE_LIBRARY = ("stages", "cli", "study", "config", "app")


def _unit(module: str) -> str:
    """The package (or top-level module) a dotted module name belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "cardiofair"


def _imports() -> dict[str, set[tuple[str, str]]]:
    """Per unit, the (importing module, imported module) pairs that cross into another unit,
    function-level imports included."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        module = ".".join(path.relative_to(SOURCE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cardiofair."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("cardiofair.")]
            else:
                continue
            for name in names:
                if _unit(name) != _unit(module):
                    found[_unit(module)].add((module, name))
    return found


def test_no_library_package_imports_a_stage_or_what_runs_it():
    imports = _imports()
    upward = sorted(f"{a} -> {b}" for unit in LIBRARY for a, b in imports[unit] if _unit(b) in ABOVE_LIBRARY)
    assert upward == []


def test_no_two_packages_import_each_other():
    imports = _imports()
    edges = {(unit, _unit(b)) for unit, pairs in imports.items() for _, b in pairs}
    cycles = sorted(f"{a} <-> {b}" for a, b in edges if a < b and (b, a) in edges)
    assert cycles == []


def test_the_report_and_the_results_load_no_model_code():
    code = ("import sys, cardiofair.report.build, cardiofair.report.cards, cardiofair.results; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"

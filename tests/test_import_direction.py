"""The package's imports run one way: nothing outside ``rdmldg_hf/testing/`` imports ``rdmldg_hf.testing`` (the
embedded default's models are product, in ``rdmldg_hf.embedded``; tests get them re-exported)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rdmldg_hf"


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module ``path`` (under ``root``) imports, anywhere in it (function bodies too), relative imports made
    absolute."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # `from . import testing`
    return found


def _imports_testing(path: Path, root: Path = ROOT) -> list[str]:
    found = imported_modules(path, root)
    return sorted(m for m in found if m == "rdmldg_hf.testing" or m.startswith("rdmldg_hf.testing."))


def test_nothing_outside_testing_imports_testing():
    product = [p for p in PACKAGE.rglob("*.py") if "testing" not in p.relative_to(PACKAGE).parts[:1]]
    product += sorted((ROOT / "recipes").glob("*.py"))
    assert len(product) > 50
    offenders = {str(p.relative_to(ROOT)): found for p in product if (found := _imports_testing(p))}
    assert offenders == {}, f"modules outside rdmldg_hf/testing/ importing it: {offenders}"


def test_the_check_sees_every_spelling_of_an_import(tmp_path):
    spellings = {
        "absolute.py": "import rdmldg_hf.testing\n",
        "from_absolute.py": "from rdmldg_hf.testing import build_tiny_model\n",
        "relative.py": "def f():\n    from ..testing.loopback import LoopbackServer\n",
        "package.py": "from .. import testing\n",
    }
    folder = tmp_path / "rdmldg_hf" / "evaluation"
    folder.mkdir(parents=True)
    for name, code in spellings.items():
        (folder / name).write_text(code)
    (folder / "clean.py").write_text("from ..embedded import build_tiny_model\nfrom . import testing_helpers\n")
    assert all(_imports_testing(folder / name, tmp_path) for name in spellings)
    assert _imports_testing(folder / "clean.py", tmp_path) == []


# The layers of README's "How the code is organised", bottom first: a module imports only from its own layer and the
# layers below. A unit is a top-level module or package of rdmldg_hf (``embedded.benchmark``, the embedded benchmark's
# images and chains, sits with ``data``, which builds it; the rest of ``embedded`` with the models it makes).
LAYERS: list[set[str]] = [
    {"_versions", "_lazy", "deprecation", "atomic", "locking", "methods", "benchmarks", "chains", "prompts"},
    {"protocol", "generation"},
    {"models", "model_config"},
    {"data", "embedded.benchmark"},
    {"embedded", "scoring"},
    {"teacher"},
    {"cards"},
    {"trainers"},
    {"recipe_setup"},
    {"evaluation"},
    {"analysis", "experiments", "demo"},
    {"testing", "training"},
    {"launch"},
    {"commands"},
    {"cli", "__init__"},
]
# Former import paths kept as aliases that import the new place lazily, with a warning.
ALIASES = {"rdmldg_hf/evaluation/lodo.py"}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "rdmldg_hf":
        return None
    if len(parts) == 1:
        return "__init__"
    return "embedded.benchmark" if parts[1:3] == ["embedded", "benchmark"] else parts[1]


def _layer(unit: str) -> int:
    found = [i for i, layer in enumerate(LAYERS) if unit in layer]
    assert found, f"{unit!r} is in no layer of LAYERS: add it (and to README's table)"
    return found[0]


def test_the_package_imports_only_downwards():
    upwards = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if name in ALIASES:
            continue
        own = _layer(_unit(_module_name(path, ROOT)))
        above = sorted({u for m in imported_modules(path) if (u := _unit(m)) and u != "__init__" and _layer(u) > own})
        if above:
            upwards[name] = above
    assert upwards == {}, f"imports of a higher layer: {upwards}"

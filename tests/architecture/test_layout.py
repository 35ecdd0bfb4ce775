"""The package's layers and which way imports run between them.

    cli, loading -> training -> evaluation -> data -> models

Each layer may import the layers to its right, never those to its left. The entry points
(`cli/` and `loading.py`, the Python API's `load_model`) share the top layer: both read
configs with `aspp_seg.cli.config`, and `aspp-seg export` loads models with
`load_model`. `models` and `evaluation` are plain PyTorch (no Lightning), and `models`
imports nothing else of the package but its error type. Checked on the source (every
import statement, those inside functions too), so an import made only on first use
cannot slip through.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import imported_packages

PACKAGE = Path(__file__).resolve().parents[2] / "aspp_seg"
LAYERS = ("cli", "loading", "training", "evaluation", "data", "models")
TOP = {"cli", "loading"}  # the entry points: one layer
LIGHTNING = ("lightning", "pytorch_lightning")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module that `path` imports, anywhere in the file (TYPE_CHECKING blocks too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _anywhere(module: str) -> bool:
    return module == "aspp_seg" or module.startswith("aspp_seg.errors")


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "aspp_seg" and parts[1] in LAYERS else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_the_top_level_holds_the_layers_and_little_else():
    entries = sorted(
        p.name for p in PACKAGE.iterdir() if p.name not in {"__init__.py", "__pycache__"}
    )
    assert len(entries) <= 7, entries
    assert {"cli", "training", "evaluation", "data", "models"} <= set(entries)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
    module = _module_name(path)
    own = _layer(module)
    if own is None:
        return  # aspp_seg/__init__.py, errors.py
    allowed = set(LAYERS[LAYERS.index(own) :]) | (TOP if own in TOP else set())
    wrong = sorted(
        name
        for name in _imports(path)
        if (layer := _layer(name)) is not None and layer not in allowed
    )
    assert not wrong, f"{module} ({own}) imports a layer above it: {wrong}"


@pytest.mark.parametrize(
    "path",
    [p for p in SOURCES if _layer(_module_name(p)) in ("models", "evaluation")],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_models_and_evaluation_are_plain_pytorch(path):
    names = _imports(path)
    assert not [n for n in names if n.split(".")[0] in LIGHTNING], f"{path.name} imports Lightning"
    if _layer(_module_name(path)) == "models":
        others = {
            n
            for n in names
            if n.split(".")[0] == "aspp_seg" and _layer(n) != "models" and not _anywhere(n)
        }
        assert not others, f"{path.name} imports {sorted(others)}"


def test_the_evaluation_layer_loads_without_lightning():
    """At run time too: importing every evaluation module pulls in no Lightning."""
    modules = [_module_name(p) for p in SOURCES if _layer(_module_name(p)) == "evaluation"]
    assert not imported_packages(f"for m in {modules!r}: __import__(m)") & set(LIGHTNING)


def _readme_layout() -> dict[str, str]:
    """The README's layout block: path (``cli/commands/``, ``errors.py``) -> its text."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    entries = {}
    for line in block.splitlines():
        if line.startswith("  ") and line.strip():
            path, _, text = line.strip().partition(" ")
            entries[path] = text.strip()
    return entries


def _package_tree() -> dict[str, set[str]]:
    """Folder (``data/datasets/``) -> its modules; ``""`` -> the top-level files."""
    tree = {"": {p.name for p in PACKAGE.glob("*.py")}}
    for folder in PACKAGE.rglob("*"):
        if folder.is_dir() and folder.name != "__pycache__":
            modules = {p.stem for p in folder.glob("*.py")} - {"__init__", "__main__"}
            tree[folder.relative_to(PACKAGE).as_posix() + "/"] = modules
    return tree


def _is_rule(text: str) -> bool:
    """An entry such as "one file per data set: ..." says what every file of its folder
    is, so a new file needs no edit of the README."""
    return text.startswith("one ") and " per " in text.split(":")[0]


def readme_mismatches(entries: dict[str, str], tree: dict[str, set[str]]) -> list[str]:
    """What the README layout block gets wrong about `tree` (see `_package_tree`): every
    folder and top-level file has a line, and a folder's line names its modules unless
    it is a rule (`_is_rule`)."""
    wrong = []
    listed, present = set(entries), set(tree) - {""} | tree[""]
    wrong += [f"{path}: not in the tree" for path in sorted(listed - present)]
    wrong += [f"{path}: no line in the README" for path in sorted(present - listed)]
    for folder in sorted(set(tree) - {""} & listed):
        text = entries[folder]
        named = set(text.replace(",", " ").replace(":", " ").replace("(", " ").split())
        if not _is_rule(text):
            wrong += [f"{folder}: {module} not named" for module in sorted(tree[folder] - named)]
    return wrong


def test_the_readme_layout_matches_the_tree():
    assert readme_mismatches(_readme_layout(), _package_tree()) == []


def test_a_new_data_set_file_needs_no_readme_edit():
    tree = _package_tree()
    tree["data/datasets/"] = tree["data/datasets/"] | {"new_data_set"}
    assert readme_mismatches(_readme_layout(), tree) == []
    tree["data/"] = tree["data/"] | {"new_module"}  # a shared module is named
    assert readme_mismatches(_readme_layout(), tree) == ["data/: new_module not named"]


def test_scoring_label_files_needs_no_torch():
    """``aspp-seg evaluate`` (reading labels, counting, scoring, tables) imports neither
    torch nor Lightning: its whole command is faster than cityscapesscripts' scoring
    (`benchmarks/evaluate_speed.py --commands true`)."""
    code = (
        "import aspp_seg.cli.commands.evaluate, aspp_seg.evaluation.folder, aspp_seg.data.io\n"
        "import aspp_seg.evaluation.metrics, aspp_seg.evaluation.reports"
    )
    assert not imported_packages(code) & {"torch", "lightning"}

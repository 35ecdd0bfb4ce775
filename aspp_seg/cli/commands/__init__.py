"""Extra `aspp-seg` subcommands beside LightningCLI's fit / validate / test / predict.

Each module in this package is one subcommand. It defines:

    NAME: str            the subcommand, e.g. "summary"
    HELP: str            one line for `aspp-seg --help`
    def main(argv: list[str]) -> None

`main` parses `argv` with jsonargparse and raises `aspp_seg.errors.UserError` for
mistakes the user can fix; `aspp_seg.cli.main` turns those into one-line errors.
Modules are found by name, so adding a subcommand touches no other file. ``NAME`` and
``HELP`` are read from the module's source (string literals), so listing the
subcommands imports none of them; a command imports its heavy dependencies (torch,
Lightning) inside `main`.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType


@dataclass(frozen=True)
class Command:
    """A subcommand found in this package.

    Attributes:
        name: its ``NAME``.
        help: its ``HELP`` line.
        module: the module's dotted name.
    """

    name: str
    help: str
    module: str

    def load(self) -> ModuleType:
        """Imports the command's module."""
        return importlib.import_module(self.module)


def _top_level(path: Path) -> dict[str, object]:
    """A source file's module-level constant assignments (name -> value) and functions
    (name -> None), read without importing it."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.FunctionDef):
            found[node.name] = None
    return found


def discover() -> dict[str, Command]:
    """Subcommand name -> its `Command`, for every module in this package that defines
    ``NAME``, ``HELP`` and ``main``."""
    commands = {}
    for info in pkgutil.iter_modules(__path__):
        path = Path(__path__[0]) / f"{info.name}.py"
        if not path.is_file():
            continue
        found = _top_level(path)
        name, text = found.get("NAME"), found.get("HELP")
        if isinstance(name, str) and isinstance(text, str) and "main" in found:
            commands[name] = Command(name, text, f"{__name__}.{info.name}")
    return dict(sorted(commands.items()))

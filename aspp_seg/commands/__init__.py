"""Extra `aspp-seg` subcommands beside LightningCLI's fit / validate / test / predict.

Each module in this package is one subcommand. It defines:

    NAME: str            the subcommand, e.g. "summary"
    HELP: str            one line for `aspp-seg --help`
    def main(argv: list[str]) -> None

`main` parses `argv` with jsonargparse and raises `aspp_seg.errors.UserError` for
mistakes the user can fix; `aspp_seg.cli.main` turns those into one-line errors.
Modules are found by name, so adding a subcommand touches no other file.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def discover() -> dict[str, ModuleType]:
    """Subcommand name -> its module, for every module in this package."""
    commands = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "main"):
            commands[module.NAME] = module
    return dict(sorted(commands.items()))

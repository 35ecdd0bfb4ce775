"""aspp-seg: DeepLabv3 and Atrous Spatial Pyramid Pooling for street-scene segmentation.

``aspp_seg.load_model(run)`` loads a trained model (see `aspp_seg.loading`); it is
imported on first use, so ``import aspp_seg`` stays cheap.

The package is layered (imports run one way): `aspp_seg.cli` -> `aspp_seg.training`
(Lightning) -> `aspp_seg.evaluation` -> `aspp_seg.data` -> `aspp_seg.models`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.2.0"

__all__ = ["load_model"]

# Modules of the flat 0.1 layout and where they live now. Configs and run folders written
# before the move name classes by the old paths (``aspp_seg.callbacks.EMA``); they still
# load, with a one-line warning that names the new path.
MOVED = {
    "aspp_seg.callbacks": "aspp_seg.training.callbacks",
    "aspp_seg.checkpoints": "aspp_seg.evaluation.checkpoints",
    "aspp_seg.class_balance": "aspp_seg.training.callbacks.class_weights",
    "aspp_seg.commands": "aspp_seg.cli.commands",
    "aspp_seg.config": "aspp_seg.cli.config",
    "aspp_seg.data.cityscapes": "aspp_seg.data.datasets.cityscapes",
    "aspp_seg.data.folder": "aspp_seg.data.datasets.folder",
    "aspp_seg.data.synthetic": "aspp_seg.data.datasets.demo",
    "aspp_seg.determinism": "aspp_seg.training.determinism",
    "aspp_seg.export": "aspp_seg.evaluation.export",
    "aspp_seg.fast_paths": "aspp_seg.training.callbacks.fast_paths",
    "aspp_seg.inference": "aspp_seg.evaluation.inference",
    "aspp_seg.lightning_cli": "aspp_seg.cli.lightning_cli",
    "aspp_seg.losses": "aspp_seg.training.losses",
    "aspp_seg.metrics": "aspp_seg.evaluation.metrics",
    "aspp_seg.module": "aspp_seg.training.module",
    "aspp_seg.param_groups": "aspp_seg.training.param_groups",
    "aspp_seg.predict": "aspp_seg.training.callbacks.prediction_writer",
    "aspp_seg.resume": "aspp_seg.training.resume",
    "aspp_seg.run_guard": "aspp_seg.training.callbacks.run_guard",
    "aspp_seg.scaling": "aspp_seg.training.hardware",
    "aspp_seg.schedules": "aspp_seg.training.schedules",
    "aspp_seg.visualize": "aspp_seg.evaluation.visualize",
}


def moved_to(name: str) -> str | None:
    """The current module path of a module path of the 0.1 layout, else None."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return None


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module path as the module that replaced it (the same object)."""

    def find_spec(self, fullname, path=None, target=None):
        if moved_to(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = moved_to(spec.name)
        warnings.warn(
            f"{spec.name} moved to {new} (aspp-seg 0.2): update the class paths in your config",
            FutureWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass  # the module it stands for is already executed


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name: str):
    if name == "load_model":
        from aspp_seg.loading import load_model

        return load_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

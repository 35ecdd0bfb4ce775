"""Module attributes made on first access (PEP 562: a module-level ``__getattr__``).

The one mechanism by which the data layer defers work until it is asked for:

- `lazy_classes`: a data set file (`aspp_seg.data.datasets`) builds its data module, a
  LightningDataModule (importing Lightning costs about 4 s), only when the class is first
  looked up, so that ``aspp-seg evaluate`` reads the same file's classes and formats
  without torch or Lightning. The class is written in the file as usual, inside a builder
  function that imports the Lightning base; it gets the ``__module__`` and
  ``__qualname__`` of a top-level class, so pickling, ``load_model`` and the
  ``class_path`` that LightningCLI writes into a run's ``config.yaml`` import it back.
- `reexported`: a package exports names of its modules without importing them
  (``aspp_seg.data.CamVidDataModule``).
- `moved_names`: names that moved in aspp-seg 0.2 still import from their old module,
  with a DeprecationWarning that names the new place.

Each returns the module's ``__getattr__``. A class or re-exported name is made once and
then kept in the module; a moved name warns at every use.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def _hook(namespace: dict[str, Any], makers: Mapping[str, Callable[[], Any]], *, keep: bool = True):
    module = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        make = makers.get(name)
        if make is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if not keep:
            return make()
        return namespace.setdefault(name, make())  # a racing thread's class wins, once

    return __getattr__


def lazy_classes(namespace: dict[str, Any], **builders: Callable[[], type]):
    """A module ``__getattr__`` that makes each class on first access.

    Args:
        namespace: the module's ``globals()``.
        **builders: class name -> a function that imports what the class needs and
            returns the class (defined in its body under that name).

    Example (a data set file)::

        def _data_module() -> type:
            from aspp_seg.data.datamodules import SegmentationDataModule

            class CamVidDataModule(SegmentationDataModule):
                ...

            return CamVidDataModule

        __getattr__ = lazy_classes(globals(), CamVidDataModule=_data_module)
    """
    module = namespace["__name__"]

    def maker(name: str, build: Callable[[], type]) -> Callable[[], type]:
        return lambda: _as_top_level(build(), module, name)

    return _hook(namespace, {name: maker(name, build) for name, build in builders.items()})


def _as_top_level(cls: type, module: str, name: str) -> type:
    """Names `cls` (defined inside a builder function) as ``module.name``, the path it is
    imported by, and renames its methods to match."""
    if cls.__name__ != name:
        raise TypeError(f"the builder of {module}.{name} returned a class named {cls.__name__}")
    old = cls.__qualname__
    cls.__module__, cls.__qualname__ = module, name
    for member in vars(cls).values():
        function = getattr(member, "__func__", member)  # staticmethod, classmethod
        for part in (function, getattr(member, "fget", None)):  # a property's getter
            if inspect.isfunction(part) and part.__qualname__.startswith(old + "."):
                part.__qualname__ = name + part.__qualname__[len(old) :]
    return cls


def _imported(path: str) -> Any:
    module, _, attribute = path.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def reexported(namespace: dict[str, Any], paths: Mapping[str, str]):
    """A module ``__getattr__`` that imports each name from its dotted path on first use."""
    return _hook(
        namespace, {name: lambda path=path: _imported(path) for name, path in paths.items()}
    )


def moved_names(namespace: dict[str, Any], paths: Mapping[str, str]):
    """A module ``__getattr__`` for names that moved: each still imports (from its new
    dotted path), with a DeprecationWarning at every place that uses the old one."""
    module = namespace["__name__"]

    def moved(name: str, path: str) -> Callable[[], Any]:
        def make() -> Any:
            warnings.warn(
                f"{module}.{name} moved to {path} (aspp-seg 0.2): update the import or class path",
                DeprecationWarning,
                stacklevel=3,  # the line that imported or looked up the old name
            )
            return _imported(path)

        return make

    return _hook(namespace, {name: moved(name, path) for name, path in paths.items()}, keep=False)

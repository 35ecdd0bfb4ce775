"""Helpers shared by the data subcommands (not a subcommand itself: it has no NAME)."""

from __future__ import annotations

from pathlib import Path

import yaml

from aspp_seg.errors import ConfigError


def _resolved(config: Path) -> dict:
    """A config file as LightningCLI reads it: ``config: <file>`` includes (relative to
    the including file) first, then this file's keys; dotted keys set nested values."""
    if not config.is_file():
        raise ConfigError(f"config {config} not found (--config)")
    spec = yaml.safe_load(config.read_text()) or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"config {config} is not a YAML mapping")
    include = spec.pop("config", None)
    merged = _resolved(config.parent / include) if include else {}
    for key, value in spec.items():
        *parents, leaf = key.split(".")
        node = merged
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return merged


def data_prefix(argv: list[str]) -> list[str]:
    """``["--data", <the config's data section>]`` for the ``--config`` in `argv`, so that
    ``--data.init_args.*`` given after it override the file; [] without ``--config``."""
    config = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = Path(argv[i + 1])
        elif arg.startswith("--config="):
            config = Path(arg.split("=", 1)[1])
    if config is None:
        return []
    data = _resolved(config).get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        raise ConfigError(f"config {config} has no data: section with a class_path")
    return ["--data", yaml.safe_dump(data)]

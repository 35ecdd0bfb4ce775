"""`aspp-seg check-data --config <yaml>`: every problem of the configured data, per file.

Builds the config's data module (without its fail-fast check), scans the train, val
and test splits it reads and decodes every file in parallel. Reports, grouped by
problem: missing partner files, unreadable or truncated images, image/label size
mismatch, label values outside the class table, labelIds where trainIds were expected
(or the reverse), empty splits and missing folders. Exit status 1 when anything is
wrong, 0 when the data is clean.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from aspp_seg.cli import config
from aspp_seg.errors import ConfigError

if TYPE_CHECKING:
    from aspp_seg.data.dataset import Problem, Sample, Scan


SHOWN_PER_KIND = 20


def add_arguments(parser) -> None:
    """The command's own options, beside those of ``aspp-seg fit``."""
    from jsonargparse import ActionYesNo

    parser.add_argument(
        "--splits",
        type=list[str],
        default=["train", "val", "test"],
        help="which of the data module's splits to check (train, val, test)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--full",
        action=ActionYesNo,
        default=True,
        help="decode every file (--no_full: layout only, the check training does at start)",
    )


def build_datamodule(argv: list[str]) -> tuple[object, dict]:
    """Reads the config as ``aspp-seg fit`` would; returns the data module (layout not
    yet checked) and the command's own options."""
    args = config.read_config(argv, add_arguments=add_arguments)
    for split in args.splits:
        if split not in ("train", "val", "test"):
            raise ConfigError(f"--splits holds {split!r}; allowed: train, val, test")
    datamodule = config.build_datamodule(args)
    return datamodule, {"splits": args.splits, "workers": args.workers, "full": args.full}


def scans(datamodule, roles: list[str]) -> dict[str, Scan]:
    """Split role -> its scan; a role that reads the same split as an earlier one is left
    out (Cityscapes tests on val)."""
    named = {
        "train": (datamodule.train_split, datamodule.scan_training),
        "val": (datamodule.val_split, lambda: datamodule.scan(datamodule.val_split)),
        "test": (datamodule.test_split, lambda: datamodule.scan(datamodule.test_split)),
    }
    out, seen = {}, set()
    for role in roles:
        split, scan = named[role]
        if split in seen:
            continue
        seen.add(split)
        out[f"{role} ({split})" if split != role else role] = scan()
    return out


def inspect_all(samples: list[Sample], workers: int) -> list[Problem]:
    """`inspect_sample` over every sample, in parallel, with a progress bar."""
    from aspp_seg.data.dataset import inspect_sample
    from aspp_seg.data.parallel import parallel_map

    found = parallel_map(inspect_sample, samples, workers=workers, desc="check-data")
    return [problem for problems in found for problem in problems]


def report(problems: list[Problem]) -> str:
    """Problems grouped by kind, in `PROBLEM_KINDS` order, the files of each listed."""
    from aspp_seg.data.dataset import PROBLEM_KINDS

    by_kind: dict[str, list[str]] = defaultdict(list)
    for problem in problems:
        by_kind[problem.kind].append(problem.message)
    lines = [f"{len(problems)} problem(s):"]
    for kind in PROBLEM_KINDS:
        messages = sorted(set(by_kind.get(kind, [])))
        if not messages:
            continue
        lines.append(f"  {kind} ({len(messages)}):")
        lines += [f"    {m}" for m in messages[:SHOWN_PER_KIND]]
        if len(messages) > SHOWN_PER_KIND:
            lines.append(f"    ... and {len(messages) - SHOWN_PER_KIND} more")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if config.wants_help(argv):
        config.print_help("aspp-seg check-data", __doc__.splitlines()[0], add_arguments)
        return
    datamodule, options = build_datamodule(argv)
    split_scans = scans(datamodule, options["splits"])
    problems: list[Problem] = []
    samples: dict[tuple[Path, Path], Sample] = {}
    name = type(datamodule).__name__
    print(f"check-data: {name} at {getattr(datamodule, 'root', '?')}")
    for role, scan in split_scans.items():
        print(f"  {role}: {len(scan.samples)} image/label pairs")
        problems += scan.problems
        for sample in scan.samples:
            samples.setdefault((sample.image, sample.label), sample)
    if options["full"]:
        problems += inspect_all(list(samples.values()), options["workers"])
    if problems:
        print(report(problems))
        sys.exit(1)
    checked = "decoded and checked" if options["full"] else "paired (layout only)"
    print(f"no problems: {len(samples)} image/label pairs {checked}")

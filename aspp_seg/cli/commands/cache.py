"""`aspp-seg cache --config <yaml> --out <dir>`: decode a data set once into a memory-mapped
uint8 cache, then check it against the PNGs.

Uses the config's data module to find the files (any layout it reads), writes one cache
folder per split role (``<out>/train``, ``<out>/val``, ...) with a progress bar, and
compares the bytes read back with a fresh decode (``--verify all``, or every n-th
sample with ``--verify_every``). Train with it by adding
``--data.init_args.cache_dir <out>``. Exit status 1 when the check finds a difference.

Only ``images.u8``, ``labels.u8`` and ``index.json`` in each ``<out>/<role>`` are
written. Every split is decoded into ``.partial`` files first; the caches already in
``--out`` are replaced only once all splits decoded, so a bad file halfway leaves them
as they were.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aspp_seg.cli import config
from aspp_seg.errors import ConfigError

ROLES = ("train", "val", "test")


def add_arguments(parser) -> None:
    """The command's own options, beside those of ``aspp-seg fit``."""
    parser.add_argument("--out", type=str, required=True, help="folder for the cache")
    parser.add_argument(
        "--splits", type=list[str], default=["train", "val"], help=f"roles among {ROLES}"
    )
    parser.add_argument("--verify_every", type=int, default=1, help="check every n-th sample")
    parser.add_argument("--progress", type=bool, default=True, help="show progress bars")


def _samples(datamodule, role: str):
    if role == "train":
        return datamodule.scan_training().raise_first()
    split = datamodule.val_split if role == "val" else datamodule.test_split
    return datamodule.scan(split).raise_first()


def main(argv: list[str]) -> None:
    if config.wants_help(argv):
        config.print_help("aspp-seg cache", __doc__.splitlines()[0], add_arguments)
        return
    from aspp_seg.data.cache import (
        DecodedCache,
        commit_cache,
        discard_staged,
        stage_cache,
        verify_cache,
    )

    args = config.read_config(argv, add_arguments=add_arguments)
    for role in args.splits:
        if role not in ROLES:
            raise ConfigError(f"--splits holds {role!r}; allowed: {', '.join(ROLES)}")
    if args.verify_every < 1:
        raise ConfigError(f"--verify_every={args.verify_every} must be >= 1")
    datamodule = config.build_datamodule(args)
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()  # the demo generates its files on first use
    out = Path(args.out)
    roles = {role: _samples(datamodule, role) for role in args.splits}
    try:
        for role, samples in roles.items():
            stage_cache(samples, out / role, progress=args.progress)
    except BaseException:
        for role in roles:
            discard_staged(out / role)
        raise
    wrong = []
    for role, samples in roles.items():
        folder = commit_cache(out / role)
        cache = DecodedCache(folder)
        gib = sum(e["height"] * e["width"] * 4 for e in cache.entries) / 2**30
        print(f"{role}: {len(cache)} samples, {gib:.2f} GiB in {folder}")
        wrong += verify_cache(cache, samples, every=args.verify_every, progress=args.progress)
    if wrong:
        print(f"{len(wrong)} cached file(s) differ from their PNGs:", *wrong, sep="\n  ")
        sys.exit(1)
    checked = "all samples" if args.verify_every == 1 else f"every {args.verify_every}th sample"
    print(f"verified {checked} against the PNGs: identical")
    print(f"train with it: --data.init_args.cache_dir {out}")

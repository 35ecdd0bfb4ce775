"""The `aspp-seg` command: LightningCLI's fit / validate / test / predict, plus the
subcommands in `aspp_seg.cli.commands` (summary, evaluate, ...), all listed in `COMMANDS`.

Importing this module is cheap: Lightning (and torch) load only when a subcommand
needs them, so ``aspp-seg --help`` and ``aspp-seg evaluate --help`` answer at once.
"""

from __future__ import annotations

import errno
import importlib
import io
import os
import re
import sys
import traceback

from aspp_seg.errors import (
    FileSystemError,
    Interrupted,
    UsageError,
    UserError,
    behind,
    file_system_cause,
)

LIGHTNING = "aspp_seg.cli.lightning_cli"

COMMANDS = {
    "fit": (LIGHTNING, "Runs the full optimization routine."),
    "validate": (LIGHTNING, "Perform one evaluation epoch over the validation set."),
    "test": (LIGHTNING, "Perform one evaluation epoch over the test set."),
    "predict": (LIGHTNING, "Run inference on your data."),
    "benchmark": (
        "aspp_seg.cli.commands.benchmark",
        "latency, images/s, peak memory, params and GMACs of a config's net vs torchvision",
    ),
    "cache": (
        "aspp_seg.cli.commands.cache",
        "decode the configured data set once into a memory-mapped uint8 cache and verify it",
    ),
    "check-data": (
        "aspp_seg.cli.commands.check_data",
        "scan the configured data set and report every faulty file (exit 1 on problems)",
    ),
    "evaluate": (
        "aspp_seg.cli.commands.evaluate",
        "score a folder of predicted label maps against ground truth (no model needed)",
    ),
    "export": (
        "aspp_seg.cli.commands.export",
        "export a checkpoint to ONNX or TorchScript and check its logits against PyTorch",
    ),
    "prepare-cityscapes": (
        "aspp_seg.cli.commands.prepare_cityscapes",
        "write Cityscapes *_labelTrainIds.png from the polygon files (parallel, idempotent)",
    ),
    "summary": (
        "aspp_seg.cli.commands.summary",
        "parameters and forward GMACs of a config's model, by part (backbone, ASPP, head, aux)",
    ),
}
"""Every subcommand: name -> (module, its line in ``aspp-seg --help``). LightningCLI
runs the first four, whose lines are the first sentence of Lightning's own help; each
other module's ``main(argv)`` runs its command on the arguments after the name.
Listing them imports none (tests/cli/test_cli.py checks the table against LightningCLI
and the files in `aspp_seg.cli.commands`)."""


def _user_error(error: BaseException | None) -> UserError | None:
    """The UserError behind `error`, if any (the CLI's parser wraps it in its own), or
    `Interrupted` for a Ctrl-C that a library turned into an error of its own."""
    found = behind(error, lambda e: isinstance(e, UserError | KeyboardInterrupt))
    return Interrupted("interrupted") if isinstance(found, KeyboardInterrupt) else found


def _file_system_error(error: BaseException) -> FileSystemError | None:
    """A read-only, full or forbidden file system behind `error` as one line that names
    the path and the operation, whichever code was writing.

    An OSError from ``open`` or ``mkdir`` names its file; one from a write to an open file
    does not, so the file is the one the innermost frame was writing to.
    """
    cause = file_system_cause(error)
    if cause is None:
        return None
    frames = [frame for frame, _ in traceback.walk_tb(cause.__traceback__)]
    path = cause.filename if cause.filename is not None else _open_file(frames)
    if frames and frames[-1].f_code.co_name in ("mkdir", "makedirs"):
        operation = "create folder"
    elif cause.filename2 is not None:
        operation, path = "move", f"{path} to {cause.filename2}"
    elif cause.errno in (errno.EACCES, errno.EPERM) and cause.filename is not None:
        operation = "open"
    else:
        operation = "write"
    return FileSystemError.of(cause, operation, path or "a file (not named)")


def _open_file(frames: list) -> str | None:
    """The name of the file that the innermost of `frames` holds open, if any."""
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            name = getattr(value, "name", None) if isinstance(value, io.IOBase) else None
            if isinstance(name, str | os.PathLike):
                return os.fspath(name)
    return None


_TRACEBACK_HEADER = "Original Traceback"
_RAISED = re.compile(r"^[A-Za-z_][\w.]*: ")  # ``aspp_seg.errors.DataError: `` of a traceback


def _one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a data worker re-raised it.

    torch re-raises a worker's exception in the main process with the worker's whole
    traceback as its message (``Caught DataError in DataLoader worker process 0.`` then
    ``Original Traceback ...``, on the first or the second line depending on the torch
    version); the error's own message is the traceback's last line.
    """
    lines = [line for line in str(error).splitlines() if line.strip()]
    if any(_TRACEBACK_HEADER in line for line in lines):
        return _RAISED.sub("", lines[-1].strip(), count=1)
    return " ".join(lines)


def usage() -> str:
    """``aspp-seg --help``: LightningCLI's subcommands, then aspp-seg's own."""
    width = max(map(len, COMMANDS))

    def lines(lightning: bool) -> list[str]:
        return [
            f"  {name:<{width}}  {text}"
            for name, (module, text) in COMMANDS.items()
            if (module == LIGHTNING) == lightning
        ]

    return "\n".join(
        [
            "usage: aspp-seg [-h] <subcommand> ...",
            "",
            "DeepLabv3 / ASPP semantic segmentation (PyTorch Lightning).",
            "",
            "subcommands (LightningCLI; aspp-seg <subcommand> --help):",
            *lines(lightning=True),
            "",
            "more subcommands (aspp-seg <command> --help):",
            *lines(lightning=False),
        ]
    )


def _run(args: list[str] | None) -> None:
    """Dispatches `args` (None: the process's command line, which LightningCLI then reads
    itself; it warns on every run when given sys.argv a second time)."""
    argv = sys.argv[1:] if args is None else args
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    if argv[0].startswith("-"):  # options before the subcommand: LightningCLI explains
        module = LIGHTNING
    elif argv[0] in COMMANDS:
        module = COMMANDS[argv[0]][0]
    else:
        raise UsageError(f"no subcommand {argv[0]!r}; aspp-seg has {', '.join(COMMANDS)}")
    if module != LIGHTNING:
        importlib.import_module(module).main(argv[1:])
        return
    from aspp_seg.cli.lightning_cli import lightning_cli

    lightning_cli(args)


def main(args: list[str] | None = None) -> None:
    """Entry point of the `aspp-seg` console script.

    A `UserError` (a mistake in the input, a failed run, Ctrl-C) ends with one line
    ``aspp-seg: error: ...`` on stderr and the error's exit status (2, 1, 130), and so
    does an OSError of a read-only, full or forbidden file system (`FileSystemError`,
    1); any other exception is a bug and keeps its traceback.
    """
    try:
        try:
            _run(None if args is None else list(args))
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None
    except Exception as error:
        user_error = _user_error(error) or _file_system_error(error)
        if user_error is None:
            raise
        print(f"aspp-seg: error: {_one_line(user_error)}", file=sys.stderr)
        # the line says it all: let go of what the failed run's frames hold (its loaders'
        # worker processes, the net), also for a caller that keeps the exception
        traceback.clear_frames(error.__traceback__)
        sys.exit(user_error.exit_code)


if __name__ == "__main__":
    main()

"""User-facing errors.

A `UserError` is a mistake in a path, a data layout or a setting, or a run that ended
without a result (it diverged, or trained nothing). The CLI prints its message as one
line, ``aspp-seg: error: ...``, and exits with the error's `exit_code` instead of
showing a traceback: 2 for a mistake in the input, 1 for a run that failed, 130 for an
interruption (Ctrl-C), 128 + the signal's number for a run a signal stopped (143 for
SIGTERM, as shells report a process it killed).
"""

import errno
import signal
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A problem the user can fix: the message names the file or setting at fault."""

    exit_code = 2


class DataError(UserError):
    """A data set is missing, laid out wrongly, or holds invalid labels."""


class ConfigError(UserError, ValueError):
    """A setting has a value outside the allowed ones."""


class UsageError(UserError):
    """The command line or a config file does not parse (an unknown key, a value of the
    wrong type, broken YAML). Not a ValueError: the parser's own retries (a value tried
    against each type of a union) must not catch it."""


class RunFailed(UserError):
    """A run stopped without a usable result (e.g. its loss became NaN); the message says
    where it stopped and what is left to resume from."""

    exit_code = 1


class Interrupted(UserError):
    """The user stopped the command (Ctrl-C); the message says how far it got."""

    exit_code = 130


class Terminated(Interrupted):
    """A signal stopped the command (SIGTERM: preemption, ``kill``, ``timeout``; SIGUSR1:
    a batch system's warning before its time limit); the message says how far it got.

    Attributes:
        signum: the signal.
        exit_code: 128 + the signal's number (143 for SIGTERM, 138 for SIGUSR1).
    """

    def __init__(self, message: str, signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = signal.Signals(signum)
        self.exit_code = 128 + int(signum)

    def __reduce__(self):  # keeps the signal when pickled (a job runner's result)
        return type(self), (str(self), int(self.signum))


class FileSystemError(UserError):
    """The file system refused a write or a read: it is read-only, full, over quota, or
    the path is not ours (`FILE_SYSTEM_ERRNOS`). The message names the operation and the
    path. Exit status 1: nothing is wrong with the command, which can run again once the
    disk has room or the folder is writable."""

    exit_code = 1

    @classmethod
    def of(cls, error: OSError, operation: str, path: object = None) -> "FileSystemError":
        """``cannot <operation> <path>: <strerror>`` for `error` (`path`: default, the
        file the error names)."""
        where = path if path is not None else error.filename
        return cls(f"cannot {operation} {where}: {error.strerror or error}")


def behind(error: BaseException | None, kind: Callable[[BaseException], bool]) -> Any:
    """The first exception of `kind` among `error` and what it was raised from or while
    handling, or None. Libraries re-raise what they caught as their own error: torch.save
    turns a full disk, and a Ctrl-C in the middle of its file, into a RuntimeError."""
    seen = set()
    while error is not None and id(error) not in seen:
        if kind(error):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def file_system_cause(error: BaseException | None) -> OSError | None:
    """The OSError of `FILE_SYSTEM_ERRNOS` behind `error` (`behind`), if any."""
    return behind(error, lambda e: isinstance(e, OSError) and e.errno in FILE_SYSTEM_ERRNOS)


def interrupted(error: BaseException | None) -> bool:
    """Whether a Ctrl-C (KeyboardInterrupt) is behind `error` (`behind`)."""
    return behind(error, lambda e: isinstance(e, KeyboardInterrupt)) is not None


FILE_SYSTEM_ERRNOS = frozenset(
    getattr(errno, name) for name in ("EROFS", "ENOSPC", "EDQUOT", "EACCES", "EPERM")
)
"""OSError numbers that are the file system's answer, not a bug: read-only, no space, over
quota, permission denied (`FileSystemError`)."""

"""User-facing errors.

A `UserError` is a mistake in a path, a data layout or a setting, or a run that ended
without a result (it diverged, or trained nothing). The CLI prints its message as one
line, ``aspp-seg: error: ...``, and exits with the error's `exit_code` instead of
showing a traceback: 2 for a mistake in the input, 1 for a run that failed, 130 for an
interruption (Ctrl-C), 128 + the signal's number for a run a signal stopped (143 for
SIGTERM, as shells report a process it killed).
"""

import signal


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

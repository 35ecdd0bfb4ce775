"""User-facing errors.

A `UserError` is a mistake in a path, a data layout or a setting, or a run that ended
without a result (it diverged, or trained nothing). The CLI prints its message as one
line, ``aspp-seg: error: ...``, and exits with the error's `exit_code` instead of
showing a traceback: 2 for a mistake in the input, 1 for a run that failed, 130 for an
interruption (Ctrl-C).
"""


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

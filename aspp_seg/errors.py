"""User-facing errors.

A `UserError` is a mistake in a path, a data layout or a setting. The CLI prints its
message as one line and exits with status 2 instead of showing a traceback.
"""


class UserError(Exception):
    """A problem the user can fix: the message names the file or setting at fault."""


class DataError(UserError):
    """A data set is missing, laid out wrongly, or holds invalid labels."""


class ConfigError(UserError, ValueError):
    """A setting has a value outside the allowed ones."""

"""The two kinds of failure the CLI reports in one line: a setting (exit 2), a runtime problem (1).

`ConfigError` is for a setting that cannot work, wherever it is found: a constructor's argument,
a config key, a file a setting names, a run check at startup. `UserError` is for what goes wrong
while a run runs (a corrupt checkpoint, a NaN loss, missing data files, a full disk). Raise sites
choose by what the problem is, not by where it is found; the CLI prints `error: <message>`.
"""

from __future__ import annotations


class UserError(RuntimeError):
    """A failure with a message that says what to do; the CLI prints it without a traceback."""

    exit_code = 1  # a runtime failure


class ConfigError(UserError, ValueError):
    """A setting (a key, an argument, a file it names) that cannot work: exit code 2.

    Also a ValueError, as timm's and torch's own argument checks are, so Python callers that catch
    ValueError keep working. jsonargparse reports a constructor's exception the same way whatever
    its type (`cli.py` unwraps it), so being a ValueError changes nothing there.
    """

    exit_code = 2  # as for a parser error

    @classmethod
    def of(cls, owner: object, message: str) -> ConfigError:
        """`<class>: <message>` for an argument `owner` (an instance, or a class) cannot take, so
        the message names the class however it was built: CLI, config file or Python."""
        name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
        return cls(f"{name}: {message}")


class DataError(UserError):
    """Data files that are missing, damaged or disagree, or a data folder that cannot be used."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No data where the configuration points; still a FileNotFoundError for callers catching it."""

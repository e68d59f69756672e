"""`UserError`: a failure whose message says what to do."""


class UserError(RuntimeError):
    """A failure with a message that says what to do; the CLI prints it without a traceback."""

    exit_code = 1  # a runtime failure


class ConfigError(UserError):
    """A setting (a key, a file it names) that cannot work: found at startup, exit code 2."""

    exit_code = 2  # as for a parser error


class DataError(UserError):
    """Data files that are missing, damaged or disagree, or a data folder that cannot be used."""


class DataNotFoundError(DataError, FileNotFoundError):
    """No data where the configuration points; still a FileNotFoundError for callers catching it."""

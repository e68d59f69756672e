"""`UserError`: a failure whose message says what to do."""


class UserError(RuntimeError):
    """A failure with a message that says what to do; the CLI prints it without a traceback."""

"""Named errors of progress-flows.

Every failure a user can cause (bad input, impossible parameters, a missing file) is a subclass of
:class:`ProgressError`, so the CLI prints it as one line and the flows fail with a readable message
instead of a traceback from deep inside numpy or faiss.
"""


class ProgressError(Exception):
    """Base class of every user-facing error of progress-flows."""


class ConfigError(ProgressError):
    """A parameter is out of range or contradicts another one."""

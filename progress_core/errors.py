"""Named errors of progress-flows.

Every failure a user can cause (bad input, impossible parameters, a missing file) is a subclass of
:class:`ProgressError`, so the CLI prints it as one line and the flows fail with a readable message
instead of a traceback from deep inside numpy or faiss.
"""


class ProgressError(Exception):
    """Base class of every user-facing error of progress-flows."""


class ConfigError(ProgressError):
    """A parameter is out of range or contradicts another one."""


class DiskFullError(ProgressError):
    """A write failed because its disk is full: retrying cannot help until space is freed, so nothing retries it."""


_NO_SPACE = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` or an exception it was raised from is a full disk.

    Writers report it differently: ``OSError`` with ``ENOSPC``, safetensors' ``SafetensorError`` and a rank's
    traceback relayed by the launcher only in their message, so both the errno and the message count.
    """
    import errno

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFullError) or isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(mark in str(exc) for mark in _NO_SPACE):
            return True
        exc = exc.__cause__ or exc.__context__
    return False

"""Named errors of progress-flows.

Every failure a user can cause (bad input, impossible parameters, a missing file) is a subclass of
:class:`ProgressError`, so the CLI prints it as one line and the flows fail with a readable message
instead of a traceback from deep inside numpy or faiss.
"""

from collections.abc import Iterator


class ProgressError(Exception):
    """Base class of every user-facing error of progress-flows."""


class ConfigError(ProgressError):
    """A parameter is out of range or contradicts another one."""


class DiskFullError(ProgressError):
    """A write failed because its disk is full: retrying cannot help until space is freed, so nothing retries it."""


_NO_SPACE = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")


def exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or during, innermost last, each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` or an exception it was raised from is a full disk.

    Writers report it differently: ``OSError`` with ``ENOSPC``, safetensors' ``SafetensorError`` and a rank's
    traceback relayed by the launcher only in their message, so both the errno and the message count.
    """
    import errno

    return any(
        isinstance(e, DiskFullError)
        or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
        or any(mark in str(e) for mark in _NO_SPACE)
        for e in exception_chain(exc)
    )

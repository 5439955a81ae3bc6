"""The project's own error type: misuse the CLI prints as one line with a hint."""


class DataAuditError(Exception):
    """A problem the user can fix; `hint` says how."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class IndexBusyError(DataAuditError):
    """The index is held by a writer (a scan or detect run) and no snapshot can stand in.

    ``progress`` carries what the writer last reported (``done``, ``total``, ``stage``), so a
    reader can say how far the scan is and try again later.
    """

    def __init__(self, message: str, hint: str = "", progress: dict | None = None) -> None:
        super().__init__(message, hint)
        self.progress = progress or {}


class DataAuditWarning(UserWarning):
    """Something the user should know that does not stop the command (which index was
    picked of two, a config file inside the data that was ignored). The CLI prints each
    as one ``dataaudit: warning:`` line; in Python they are ordinary warnings."""

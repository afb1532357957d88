"""One exception base for everything mailstack reports to a user.

Every error a user can cause carries a message meant for that user; the CLI prints
``str(err)`` to stderr and exits with ``err.exit_code``. Nothing else escapes as a traceback.
"""

from __future__ import annotations


class MailstackError(Exception):
    """Base of every error mailstack reports to a user."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(MailstackError):
    """The site file, the secrets or an argument is wrong; nothing was changed."""

    exit_code = 2


class ToolError(MailstackError):
    """An outside tool (podman, a daemon's checker, ansible) failed or is missing."""

    exit_code = 3


class CheckFailed(MailstackError):
    """A check or verification found problems; the report has been printed."""

    exit_code = 1

"""Errors the toolkit raises. Each carries enough to print one precise line for an engineer."""

from __future__ import annotations

EXIT_INPUT = 2
"""Exit status of a command stopped by bad input or usage (the README's table of exit codes)."""
EXIT_FAILED_CHECK = 1
"""Exit status of a command whose input was read but failed a check: a bundle that does not
verify, a message id that is not there."""


class ForensicsError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line and exits with ``exit_code``."""

    exit_code = EXIT_INPUT


class SchemaError(ForensicsError):
    """A DataFrame does not match the canonical schema."""

    def __init__(self, table: str, column: str | None, problem: str) -> None:
        self.table, self.column, self.problem = table, column, problem
        where = f"{table}.{column}" if column else table
        super().__init__(f"schema error in {where}: {problem}")


class ProfileError(ForensicsError):
    """Unknown profile name or a profile file of the wrong shape."""


class WindowError(ForensicsError):
    """An incident window that cannot be parsed, or whose end is not after its start."""


class BundleError(ForensicsError):
    """An evidence bundle that is missing, incomplete, corrupt or tampered with."""


class VerificationError(BundleError):
    """A bundle that was read but does not verify: a file missing, added, altered or refused
    (a name outside the bundle, a link, a special file), or its manifest edited."""

    exit_code = EXIT_FAILED_CHECK


class ScenarioError(ForensicsError):
    """An unknown simulator scenario or invalid simulator parameters."""


class SourceError(ForensicsError):
    """An evidence source failed: unreachable, authentication, timeout, missing data.

    ``source`` names the source (mongodb, kafka, ...), ``hint`` says what to check.
    """

    def __init__(self, source: str, problem: str, hint: str = "") -> None:
        self.source, self.problem, self.hint = source, problem, hint
        super().__init__(f"{source}: {problem}" + (f" (check: {hint})" if hint else ""))


class SourceTimeout(SourceError):
    """A query of an evidence source exceeded its server-side time limit (maxTimeMS, ...)."""


class ParameterError(ForensicsError):
    """A notebook or report parameter of the wrong type or value."""


def is_connection_refused(exc: BaseException) -> bool:
    """Whether a client's connection error is a refusal (nothing listens there) rather than a
    reset or a timeout: the first means "wrong host/port or server down", the others may pass."""
    chain: BaseException | None = exc
    while chain is not None:
        if isinstance(chain, ConnectionRefusedError):
            return True
        chain = chain.__cause__ or chain.__context__
    return "Connection refused" in str(exc) or "Errno 111" in str(exc)

"""One exception root; each subclass carries its exit code and builds its own message.

Exit codes follow reprotest and diffoscope: 0 success, 1 not reproducible / differences /
check failed, 2 bad input or usage, 3 environment failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3


class ReprobuildError(Exception):
    """Root of every error reprobuild reports to a user."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class BadInput(ReprobuildError):
    """Bad arguments, pipeline or lock (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class NotAvailableYet(BadInput):
    """A contract command whose capability has not been built yet (exit 2, never a fake success)."""

    def __init__(self, command: str) -> None:
        super().__init__(f"`reprobuild {command}` is not available yet in this version of reprobuild")


@dataclass(frozen=True)
class Location:
    """A place in a file, for messages: `file:line`."""

    path: Path | str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else str(self.path)


class FileError(BadInput):
    """Malformed input file: the message names the file, the line and what to fix."""

    def __init__(self, where: Location, problem: str, hint: str | None = None) -> None:
        super().__init__(f"{where}: {problem}", hint)
        self.where = where
        self.problem = problem


class UnsafeOutput(BadInput):
    """A build left in its output a symbolic link leaving the output dir (exit 2, naming the link)."""

    def __init__(self, link: str, problem: str) -> None:
        super().__init__(f"{link}: a symbolic link in the build output that points outside it ({problem}); "
                         "reprobuild never follows a link out of $OUT",
                         "write the file itself into $OUT, or make the link relative and inside $OUT")
        self.link = link


class CheckFailed(ReprobuildError):
    """A `--check`, an assertion or a comparison found a difference (exit 1)."""

    exit_code = EXIT_DIFFERENT


class EnvironmentFailure(ReprobuildError):
    """Network, engine or toolchain unavailable (exit 3)."""

    exit_code = EXIT_ENVIRONMENT


class DownloadError(EnvironmentFailure):
    """A download failed after every retry and every mirror."""


class IntegrityError(EnvironmentFailure):
    """Downloaded bytes do not match the lock: rejected before anything is extracted."""


class UnsafeArchive(EnvironmentFailure):
    """An archive tried to write outside its tree, or holds what a toolchain never needs."""


class CommandFailed(EnvironmentFailure):
    """A subprocess reprobuild ran exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        shown = " ".join(argv)
        tail = "\n".join("    " + line for line in stderr.strip().splitlines()[-20:])
        super().__init__(f"command failed with exit code {returncode}: {shown}" + (f"\n{tail}" if tail else ""))
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr

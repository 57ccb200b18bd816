"""User-facing errors: each problem names the file, the line, the field, the value and the fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a user's input."""

    message: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "
        return where + self.message


class KgcError(Exception):
    """An error caused by the user's input or configuration (not a bug in kgc).

    Carries every problem found, so a user fixes them all in one pass instead of one per run.
    """

    def __init__(self, problems: list[Problem] | Problem | str, *, limit: int = 20):
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems = list(problems)
        self.limit = limit
        super().__init__(self.render())

    def render(self) -> str:
        shown = [str(p) for p in self.problems[: self.limit]]
        hidden = len(self.problems) - len(shown)
        if hidden > 0:
            shown.append(f"... and {hidden} more problem(s) of the same kind")
        return "\n".join(shown)

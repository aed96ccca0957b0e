"""Source positions and the one error type the compiler raises.

Every error a user can cause reads like calicoctl's, plus where it is:

    policy.yaml:14:7: spec.ingress[0].destination.ports[0] = '80:70': range is empty (min > max)

``PolicyError`` can carry several diagnostics so ``hepbpf check`` reports all of
them at once; warnings use the same shape but never fail a compile.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A position in a source file: 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NOWHERE = Span("<builtin>", 0, 0)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    span: Span
    path: str  # field path, e.g. "spec.ingress[0].destination.ports[0]"
    value: object  # the offending value as written (None if not applicable)
    reason: str
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span is not NOWHERE else ""
        sev = "warning: " if self.severity == "warning" else ""
        if self.path and self.value is not None:
            return f"{where}{sev}{self.path} = {_show(self.value)}: {self.reason}"
        if self.path:
            return f"{where}{sev}{self.path}: {self.reason}"
        return f"{where}{sev}{self.reason}"


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class PolicyError(Exception):
    """Invalid input. ``diagnostics`` lists every problem found (at least one)."""

    def __init__(self, diagnostics: list[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def error(span: Span, path: str, value: object, reason: str) -> PolicyError:
    return PolicyError(Diagnostic(span, path, value, reason))

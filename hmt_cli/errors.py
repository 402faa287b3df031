"""The errors hmt reports to users, each with a documented exit code.

Every failure a user can cause or fix is an :class:`HmtError`: the CLI prints its one-line
message (plus the hint) on stderr and exits with its code. Anything else is a bug and exits 1
with a request to re-run with ``HMT_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "HmtError",
    "UsageError",
    "ModelNotFound",
    "WeightsUnavailable",
    "WeightsMismatch",
    "UnsupportedModel",
    "InvalidValues",
    "OutputError",
    "Interrupted",
]


class HmtError(Exception):
    """A user-facing failure: one line of message, an optional hint, and an exit code."""

    exit_code: int = 1
    label: str = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = f"hmt: {self.label}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        # One line by contract: pipelines grep stderr, and multi-line errors get cut.
        return " ".join(text.split())


class UsageError(HmtError):
    exit_code = 2
    label = "usage error"


class ModelNotFound(HmtError):
    exit_code = 3
    label = "model not found"


class WeightsUnavailable(HmtError):
    """Weights missing, unreadable, unsafe to unpickle, or not downloadable (offline)."""

    exit_code = 4
    label = "weights unavailable"


class WeightsMismatch(HmtError):
    exit_code = 5
    label = "weights do not match the model"


class UnsupportedModel(HmtError):
    """The model's graph or chain could not be extracted, or the pair has nothing to transfer."""

    exit_code = 6
    label = "unsupported model"


class InvalidValues(HmtError):
    exit_code = 7
    label = "invalid values"


class OutputError(HmtError):
    exit_code = 8
    label = "output error"


class Interrupted(HmtError):
    exit_code = 130
    label = "interrupted"


# The table the README and docs/errors.md document; tests check both stay in sync with it.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug: re-run with HMT_DEBUG=1 and report the traceback)",
    UsageError.exit_code: "usage error: bad flag, value or config file",
    ModelNotFound.exit_code: "model not found: unknown timm name or unimportable factory",
    WeightsUnavailable.exit_code: "weights unavailable: missing, unreadable, unsafe or not downloadable",
    WeightsMismatch.exit_code: "weights do not match the source model (missing / unexpected / mismatched keys)",
    UnsupportedModel.exit_code: "unsupported model: graph or chain extraction failed, nothing to transfer",
    InvalidValues.exit_code: "invalid values: NaN/Inf in the source or the transferred target",
    OutputError.exit_code: "output error: exists without --force, not writable, same as input, disk full",
    Interrupted.exit_code: "interrupted (Ctrl-C); nothing was written",
}

"""One frozen options object per command; config presets from ``configs/*.toml``.

Precedence: built-in defaults < ``--config FILE`` < explicit CLI flags. The CLI passes only the
flags the user actually set, so a preset can change a default without the CLI knowing about it.
"""

from __future__ import annotations

import ast
import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError

__all__ = ["TransferOptions", "load_config", "parse_model_args", "DEVICES", "DTYPES", "HEADS", "DEFAULT_STRATEGY"]

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "float16", "bfloat16")
SIGNAL_CHECKS = ("off", "report", "fallback")
HEADS = ("init", "transfer")
# The quality benchmark's choice (docs/quality.md, "`block-initscale-auto`"): `block-initscale` (on the GPU
# protocol the only strategy ahead of scratch on every arm-1 target, with the largest mean gain there) op for
# op wherever the source is not much narrower than the target, and `block-initscale-isolate` where it is
# (ahead of scratch on every arm-2 row from the narrow CIFAR ResNet-56, measured on the CPU).
DEFAULT_STRATEGY = "block-initscale-auto"


@dataclass(frozen=True)
class TransferOptions:
    src: str
    tgt: str
    out: Path | None = None
    src_weights: Path | None = None
    num_classes: int | None = None
    strategy: str = DEFAULT_STRATEGY
    seed: int = 0
    device: str = "auto"
    dtype: str | None = None  # None keeps the source weights' dtype
    force: bool = False
    dry_run: bool = False
    src_kwargs: Mapping[str, Any] = field(default_factory=dict)
    tgt_kwargs: Mapping[str, Any] = field(default_factory=dict)
    signal_check: str | None = None  # off | report | fallback; None = the strategy's own policy
    head: str = "init"  # transfer: the source's classifier too (the label spaces must be the same)

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes <= 0:
            raise UsageError(f"--num-classes must be a positive integer, got {self.num_classes}")
        if not 0 <= self.seed < 2**63:  # torch.manual_seed's range, checked before any model is built
            raise UsageError(f"--seed must be an integer in [0, 2**63), got {self.seed}")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise UsageError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.signal_check is not None and self.signal_check not in SIGNAL_CHECKS:
            raise UsageError(f"--signal-check must be one of {', '.join(SIGNAL_CHECKS)}, got {self.signal_check!r}")
        if self.head not in HEADS:
            raise UsageError(f"--head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.out is None and not self.dry_run:
            raise UsageError("--out is required unless --dry-run is given")

    def with_overrides(self, **changes: Any) -> TransferOptions:
        return dataclasses.replace(self, **changes)


_TRANSFER_KEYS = {f.name for f in dataclasses.fields(TransferOptions)}


def load_config(path: Path) -> dict[str, Any]:
    """Read a TOML preset; only keys of TransferOptions (with - or _) are allowed."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    section = raw.get("transfer", raw)
    if not isinstance(section, dict):
        raise UsageError(f"config file {path}: [transfer] must be a table")
    values = {str(k).replace("-", "_"): v for k, v in section.items()}
    unknown = sorted(set(values) - _TRANSFER_KEYS)
    if unknown:
        raise UsageError(f"config file {path}: unknown keys {', '.join(unknown)}")
    for key, value in values.items():
        _check_type(path, key, value)
    for key in ("out", "src_weights"):
        if key in values:
            values[key] = Path(values[key])
    return values


# TOML value types per key; a wrong type must be a usage error here, not a crash deep in a stage.
_CONFIG_TYPES: dict[str, type] = {
    "num_classes": int, "seed": int, "force": bool, "dry_run": bool, "src_kwargs": dict, "tgt_kwargs": dict,
}


def _check_type(path: Path, key: str, value: Any) -> None:
    expected = _CONFIG_TYPES.get(key, str)
    # bool is an int subclass, but `seed = true` is a typo, not a seed.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise UsageError(f"config file {path}: {key} must be {expected.__name__}, got {value!r}")


def parse_model_args(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``["img_size=64", "drop_rate=0.1"]`` -> kwargs; values are Python literals, else strings."""
    kwargs: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text
    return kwargs

"""An on-disk cache of model analyses (graph + chain), so repeated transfers skip tracing.

Building two models on the meta device and tracing them is most of what ``hmt transfer`` adds to
the I/O floor on a small pair (~0.3 s of ~0.5 s). The result depends only on the model name, its
constructor arguments and the code that traced it, so it is cached as JSON under
``$HMT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/hmt`` or ``~/.cache/hmt``); ``HMT_CACHE_DIR=off``
disables it. The signal check's measurement of a target's seeded init (per-layer stds on a seeded
noise batch, a pure function of the same inputs plus the seed) is cached the same way.

The cache can only make a run faster, never different or failing: the key covers the hmt source
files that produce an analysis plus the torch and timm versions, only registry names are cached
(``hf-hub:``/``local-dir:`` configs and user factories can change under the same name), and an
unreadable, corrupt or unwritable entry is ignored. JSON, not pickle: a cache file is data, and
loading it cannot run code. (A reference measured with another thread count can differ in the last
bits of its floats; that moves no verdict but one sitting exactly on a threshold.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["cache_dir", "cache_key", "cached", "encode", "decode"]

CACHE_ENV = "HMT_CACHE_DIR"
_FORMAT = 1
# The modules whose code decides what an analysis contains: editing any of them invalidates the cache.
_SOURCES = ("models.py", "graph.py", "_graph_build.py", "trace.py", "_fx_trace.py", "_meta_rules.py", "chain.py",
            "cache.py", "pipeline.py", "health.py")

T = TypeVar("T")


def cache_dir() -> Path | None:
    """Where entries live, or ``None`` when caching is off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "no", "false") else Path(value)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hmt"


@lru_cache(maxsize=1)
def _code_fingerprint() -> str:
    import timm
    import torch

    digest = hashlib.sha256(f"{_FORMAT}|{torch.__version__}|{timm.__version__}".encode())
    here = Path(__file__).resolve().parent
    for name in _SOURCES:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def cache_key(**parts: Any) -> str:
    """A file name for ``parts`` (JSON-able) under the current code and library versions."""
    blob = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(f"{_code_fingerprint()}|{blob}".encode()).hexdigest()[:40]


def _types() -> dict[str, type]:
    from .chain import Chain, OffChain
    from .graph import Edge, LayerGraph, LayerNode

    return {cls.__name__: cls for cls in (LayerNode, Edge, LayerGraph, OffChain, Chain)}


def encode(value: Any) -> Any:
    """Dataclasses, tuples, frozensets and int-keyed mappings -> tagged JSON that :func:`decode` inverts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"dc": type(value).__name__,
                "f": {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, tuple):
        return {"t": [encode(v) for v in value]}
    if isinstance(value, (frozenset, set)):
        return {"s": [encode(v) for v in sorted(value, key=repr)]}
    if isinstance(value, Mapping):
        return {"m": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot cache a {type(value).__name__}")


def decode(data: Any, types: Mapping[str, type] | None = None) -> Any:
    types = _types() if types is None else types
    if isinstance(data, list):
        return [decode(v, types) for v in data]
    if not isinstance(data, dict):
        return data
    if "dc" in data:
        cls = types[data["dc"]]  # KeyError for anything not whitelisted: the entry is ignored
        return cls(**{k: decode(v, types) for k, v in data["f"].items()})
    if "t" in data:
        return tuple(decode(v, types) for v in data["t"])
    if "s" in data:
        return frozenset(decode(v, types) for v in data["s"])
    return {decode(k, types): decode(v, types) for k, v in data["m"]}


def cached(key: str | None, compute: Callable[[], T]) -> T:
    """``compute()``, or the entry stored under ``key`` by an earlier call; ``key=None`` never caches."""
    folder = cache_dir()
    if key is None or folder is None:
        return compute()
    path = folder / f"{key}.json"
    try:
        return decode(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # missing or unusable: compute it again
    value = compute()
    _store(path, value)
    return value


def _store(path: Path, value: Any) -> None:
    """Write atomically (a concurrent reader sees the old entry or the new one); failures are ignored."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(encode(value), fh, separators=(",", ":"))
        os.replace(tmp, path)
        tmp = None
    except (OSError, TypeError, ValueError):
        pass  # a read-only home or a full disk must not fail the transfer
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

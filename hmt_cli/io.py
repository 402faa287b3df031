"""Reading checkpoints lazily and safely; writing safetensors atomically.

Only this module and :mod:`apply` touch tensor data. Torch pickles are loaded with
``weights_only=True`` (through timm's own loader, which also unwraps ``state_dict``/``model``/EMA
keys and strips ``module.`` prefixes); safetensors files are opened lazily with ``safe_open`` so
only the tensors a plan uses are ever read.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import Interrupted, OutputError, WeightsUnavailable

if TYPE_CHECKING:
    import torch

__all__ = [
    "WeightSource", "open_weights", "DictSource", "check_output_path", "write_safetensors", "sha256_file", "TMP_SUFFIX",
]

TMP_SUFFIX = ".hmt-tmp"  # every temp file hmt creates ends so; a crash leaves only names that say whose they are


class WeightSource(Protocol):
    identity: str

    def keys(self) -> list[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def get(self, key: str) -> torch.Tensor: ...

    def float_dtype(self) -> torch.dtype | None: ...


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class _BackgroundHash:
    """sha256 of a file computed in a thread (hashlib releases the GIL) while the transfer runs."""

    def __init__(self, path: Path) -> None:
        self._result: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._result = sha256_file(path)
        except BaseException as exc:  # reported when the identity is asked for
            self._error = exc

    def value(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise WeightsUnavailable(f"cannot read weights while hashing: {self._error}")
        return f"sha256:{self._result}"


# Up to this size the file stays mapped through one handle: its resident pages cost at most this much.
SHARED_HANDLE_MAX_BYTES = 512 * 2**20


class SafetensorsSource:
    def __init__(self, path: Path) -> None:
        from safetensors import safe_open
        from timm.models import clean_state_dict

        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
            raw_keys = list(self._file.keys())
        except Exception as exc:  # safetensors raises its own error types for bad headers
            raise WeightsUnavailable(f"{path} is not a readable safetensors file: {_first_line(exc)}") from None
        # The same prefix cleaning timm applies to torch checkpoints (module., _orig_mod.).
        self._raw = clean_state_dict({k: k for k in raw_keys})
        self._hash = _BackgroundHash(path)
        self.path = path
        self._small = path.stat().st_size <= SHARED_HANDLE_MAX_BYTES

    @property
    def identity(self) -> str:
        return self._hash.value()

    def keys(self) -> list[str]:
        return list(self._raw)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._file.get_slice(self._raw[key]).get_shape())

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        try:
            if self._small:  # one handle: reopening re-parses the header (~0.3 ms a tensor)
                return self._file.get_tensor(self._raw[key])
            # A handle per tensor: each tensor owns its mapping, released with it. One long-lived
            # handle kept every touched page of the source resident (+1.7 GB for vit_huge).
            with safe_open(str(self.path), framework="pt", device="cpu") as fh:
                return fh.get_tensor(self._raw[key])
        except Exception as exc:
            raise WeightsUnavailable(f"{self.path}: cannot read tensor {key!r}: {_first_line(exc)}") from None

    def float_dtype(self) -> torch.dtype | None:
        import torch

        names = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
        for key in self._raw.values():
            dtype = names.get(self._file.get_slice(key).get_dtype())
            if dtype is not None:
                return dtype
        return None


class DictSource:
    """An in-memory state dict (torch checkpoints, hub weights, tests)."""

    def __init__(self, state: Mapping[str, Any], identity: str) -> None:
        import torch

        self._state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        self.identity = identity

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._state[key].shape)

    def get(self, key: str) -> torch.Tensor:
        return self._state[key]

    def float_dtype(self) -> torch.dtype | None:
        return next((v.dtype for v in self._state.values() if v.is_floating_point()), None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _is_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return len(head) > 9 and head[8:9] == b"{"


def open_weights(path: Path) -> WeightSource:
    """Open a checkpoint by content, not extension: safetensors lazily, torch pickles weights-only."""
    if not path.exists():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    if path.is_dir():
        raise WeightsUnavailable(f"{path} is a directory, expected a .safetensors or torch checkpoint file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise WeightsUnavailable(f"cannot read {path}: {exc.strerror}") from None
    if not head:
        raise WeightsUnavailable(f"weights file {path} is empty")
    if _is_safetensors(head):
        return SafetensorsSource(path)
    return _open_torch(path, head)


def _open_torch(path: Path, head: bytes) -> DictSource:
    from timm.models import load_state_dict

    if not head.startswith(b"PK") and not head.startswith(b"\x80"):
        raise WeightsUnavailable(f"{path} is neither a safetensors file nor a torch checkpoint")
    if path.suffix == ".safetensors":  # timm's loader picks the format by extension, not content
        raise WeightsUnavailable(f"{path} is named .safetensors but holds a torch pickle",
                                 hint="rename it to .pth")
    try:
        state = load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as exc:  # zip / pickle readers raise many types for truncated or corrupt files
        if _refused_unpickling(exc):
            raise WeightsUnavailable(
                f"refused to unpickle {path}: unsafe, it holds objects other than tensors that could run code"
                f"{_unsafe_globals(exc)}",
                hint="re-save it as a plain state dict or convert it to .safetensors",
            ) from None
        raise WeightsUnavailable(f"{path} is not a readable torch checkpoint: {_first_line(exc)}") from None
    if not isinstance(state, Mapping):
        raise WeightsUnavailable(f"{path} does not hold a state dict (got {type(state).__name__})")
    source = DictSource(state, identity=f"sha256:{sha256_file(path)}")
    if not source.keys():
        raise WeightsUnavailable(f"{path} contains no tensors")
    return source


def _refused_unpickling(exc: BaseException) -> bool:
    """``weights_only`` refusals: torch raises UnpicklingError, timm re-raises it as RuntimeError."""
    return isinstance(exc, pickle.UnpicklingError) or isinstance(exc.__cause__, pickle.UnpicklingError)


def _unsafe_globals(exc: BaseException) -> str:
    """The globals torch refused ("Unsupported global(s): io.open"): they tell the user what is in the file."""
    for text in (str(exc), str(exc.__cause__ or "")):
        found = _UNSUPPORTED.search(text)
        if found:
            return f" ({found.group(1).removeprefix('GLOBAL ').split(' was ')[0][:80]})"
    return ""


_UNSUPPORTED = re.compile(r"Unsupported globals?:\s*(.+?)\.(?:\s|$)")


def check_output_path(out: Path, force: bool, inputs: tuple[Path, ...] = ()) -> None:
    """Fail before any heavy work if ``out`` cannot be written."""
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise OutputError(f"--out {out} is a directory", hint="give a file path such as init.safetensors")
    for src in inputs:
        same = out.exists() and src.exists() and os.path.samefile(src, out)
        if same or out.resolve() == src.resolve():
            raise OutputError(f"--out {out} is the input weights file; refusing to overwrite the source")
    if not parent.exists():
        raise OutputError(f"output directory {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} is not a directory")
    _probe_writable(parent)
    if out.exists() and not force:
        raise OutputError(f"{out} already exists", hint="pass --force to overwrite it")


def _probe_writable(parent: Path) -> None:
    """Create and remove a temp file: ``os.access`` says yes to root on read-only mounts and /proc."""
    try:
        fd, name = tempfile.mkstemp(prefix=".probe.", suffix=TMP_SUFFIX, dir=parent)
    except OSError as exc:
        raise OutputError(f"output directory {parent} is not writable: {exc.strerror or exc}") from None
    try:
        os.close(fd)
    finally:
        os.unlink(name)


def _prepare(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, none sharing storage (safetensors rejects both)."""
    seen: set[int] = set()
    ready: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        t = tensor.detach().cpu()
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if not t.is_contiguous() or (ptr is not None and ptr in seen):
            t = t.contiguous().clone()
            ptr = t.untyped_storage().data_ptr()
        if ptr is not None:
            seen.add(ptr)
        ready[key] = t
    return ready


def write_safetensors(state: Mapping[str, torch.Tensor], out: Path, metadata: Mapping[str, str]) -> None:
    """Write to a temp file beside ``out``, then rename: readers never see a partial file.

    The temp file goes on every exit path but success, Ctrl-C included (``BaseException``).
    """
    from safetensors.torch import save_file

    parent = out.parent if str(out.parent) else Path(".")
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=TMP_SUFFIX, dir=parent)
        tmp = Path(tmp_name)
        os.close(fd)
        save_file(_prepare(state), str(tmp), metadata=dict(metadata))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise whoever reads the file next
        os.replace(tmp, out)
        tmp = None
    except KeyboardInterrupt:
        raise Interrupted("interrupted while writing; nothing was written") from None
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    except Exception as exc:  # safetensors reports I/O failures (disk full) as its own error type
        raise OutputError(f"cannot write {out}: {_first_line(exc)}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)

"""hmt_cli.io: reading checkpoints (by content, weights-only, timm's wrappers) and writing atomically."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import fingerprint, save_state, sha256, tmp_files

from hmt_cli.errors import Interrupted, OutputError, WeightsUnavailable
from hmt_cli.io import DictSource, check_output_path, open_weights, write_safetensors


def small_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.randn(4, 3, 3, 3, generator=gen), "conv.bias": torch.randn(4, generator=gen),
            "bn.num_batches_tracked": torch.tensor(5)}


# --- reading -----------------------------------------------------------------------------------


def test_safetensors_source(tmp_path: Path) -> None:
    state = small_state()
    path = save_state(state, tmp_path / "w.safetensors")
    source = open_weights(path)
    assert sorted(source.keys()) == sorted(state)
    assert source.shape("conv.weight") == (4, 3, 3, 3)
    assert torch.equal(source.get("conv.weight"), state["conv.weight"])
    assert source.float_dtype() == torch.float32
    assert source.identity == f"sha256:{sha256(path)}"


def test_content_not_extension_decides(tmp_path: Path) -> None:
    path = save_state(small_state(), tmp_path / "weights.bin")  # safetensors bytes, an arbitrary name
    assert "conv.bias" in set(open_weights(path).keys())


def test_safetensors_prefixes_are_cleaned(tmp_path: Path) -> None:
    path = save_state({f"module._orig_mod.{k}": v for k, v in small_state().items()}, tmp_path / "w.safetensors")
    assert sorted(open_weights(path).keys()) == sorted(small_state())


def test_half_precision_dtype(tmp_path: Path) -> None:
    path = save_state({k: v.half() if v.is_floating_point() else v for k, v in small_state().items()},
                      tmp_path / "w.safetensors")
    assert open_weights(path).float_dtype() == torch.float16


@pytest.mark.parametrize("wrapper", ["state_dict", "model", None])
def test_torch_checkpoint_wrappers(tmp_path: Path, wrapper: str | None) -> None:
    state = {f"module.{k}": v for k, v in small_state().items()}
    path = tmp_path / "ckpt.pth"
    torch.save({wrapper: state, "epoch": 7} if wrapper else state, path)
    source = open_weights(path)
    assert sorted(source.keys()) == sorted(small_state())
    assert torch.equal(source.get("conv.bias"), small_state()["conv.bias"])
    assert source.identity == f"sha256:{sha256(path)}"


def test_shipped_fixture_checkpoint(r18_pth: Path, r18_state: dict[str, Any]) -> None:
    source = open_weights(r18_pth)
    assert set(source.keys()) == set(r18_state)


def test_torch_pickle_with_safetensors_name(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    torch.save(small_state(), path)
    with pytest.raises(WeightsUnavailable, match="holds a torch pickle"):
        open_weights(path)


@pytest.mark.parametrize(("content", "match"), [
    ({"epoch": 3}, "contains no tensors"),
    ([torch.zeros(2)], "state dict|not a readable"),
])
def test_torch_file_without_a_state_dict(tmp_path: Path, content: Any, match: str) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(WeightsUnavailable, match=match):
        open_weights(path)


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_unsafe_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": _Marker(marker)}, path)
    with pytest.raises(WeightsUnavailable, match=r"refused to unpickle.*unsafe"):
        open_weights(path)
    assert not marker.exists()


def test_legacy_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Marker(marker)}, protocol=2))
    with pytest.raises(WeightsUnavailable, match="refused"):
        open_weights(path)
    assert not marker.exists()


def test_dict_source() -> None:
    source = DictSource({**small_state(), "note": "not a tensor"}, identity="test")
    assert set(source.keys()) == set(small_state())
    assert source.shape("conv.weight") == (4, 3, 3, 3)
    assert source.float_dtype() == torch.float32


# --- checking the output path ------------------------------------------------------------------


def test_output_path_ok(tmp_path: Path) -> None:
    check_output_path(tmp_path / "x.safetensors", force=False)
    assert list(tmp_path.iterdir()) == []  # the writability probe cleans up after itself


def test_output_path_existing_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"):
        check_output_path(out, force=False)
    check_output_path(out, force=True)


def test_output_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="is a directory"):
        check_output_path(tmp_path, force=True)


@pytest.mark.parametrize("how", ["same", "hardlink", "symlink"])
def test_output_path_is_the_input(tmp_path: Path, how: str) -> None:
    src = save_state(small_state(), tmp_path / "w.safetensors")
    out = src if how == "same" else tmp_path / "other.safetensors"
    if how == "hardlink":
        os.link(src, out)
    elif how == "symlink":
        out.symlink_to(src)
    with pytest.raises(OutputError, match="input weights file"):
        check_output_path(out, force=True, inputs=(src,))


def test_output_parent_problems(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.safetensors", force=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a directory"):
        check_output_path(blocker / "x.safetensors", force=False)


def test_relative_output_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    check_output_path(Path("x.safetensors"), force=False)
    write_safetensors(small_state(), Path("x.safetensors"), {"k": "v"})
    assert (tmp_path / "x.safetensors").is_file() and tmp_files(tmp_path) == []


# --- writing -----------------------------------------------------------------------------------


def test_write_round_trip_with_views_and_shared_storage(tmp_path: Path) -> None:
    from safetensors import safe_open

    base = torch.arange(24.0).reshape(4, 6)
    state = {"t": base.t(), "a": base, "b": base, "scalar": torch.tensor(1.5)}  # non-contiguous, shared storage
    out = tmp_path / "x.safetensors"
    write_safetensors(state, out, {"hmt": "{}"})
    with safe_open(str(out), framework="pt") as fh:
        assert fh.metadata() == {"hmt": "{}"}
        for key, value in state.items():
            assert torch.equal(fh.get_tensor(key), value), key
    assert tmp_files(tmp_path) == []


def test_written_file_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_safetensors(small_state(), tmp_path / "x.safetensors", {})
    finally:
        os.umask(old)
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def _failing_save(exc: BaseException) -> Any:
    def save_file(tensors: dict[str, Any], filename: str, metadata: dict[str, str] | None = None) -> None:
        Path(filename).write_bytes(b"partial")
        raise exc

    return save_file


@pytest.mark.parametrize(("exc", "error"), [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), OutputError),
    (RuntimeError("safetensors: write failed"), OutputError),
    (KeyboardInterrupt(), Interrupted),
])
def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      exc: BaseException, error: type[Exception]) -> None:
    import safetensors.torch

    out = tmp_path / "x.safetensors"
    out.write_bytes(b"previous")
    before = fingerprint(tmp_path)
    monkeypatch.setattr(safetensors.torch, "save_file", _failing_save(exc))
    with pytest.raises(error):
        write_safetensors(small_state(), out, {})
    assert fingerprint(tmp_path) == before


def test_rename_failure_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def cross_device(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "replace", cross_device)
    with pytest.raises(OutputError, match="cannot write"):
        write_safetensors(small_state(), tmp_path / "x.safetensors", {})
    assert list(tmp_path.iterdir()) == []


def test_temp_file_creation_failure(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="cannot write"):
        write_safetensors(small_state(), tmp_path / "missing-dir" / "x.safetensors", {})

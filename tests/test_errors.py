"""Every bad input: its exit code, one line on stderr, nothing written, no temp files, input untouched.

Issue 7, item 2. Runs go through Typer's CliRunner (in-process, so faults can be injected with
monkeypatch) except where only a real process can show the behaviour: SIGINT, the console entry
point's own usage errors, the traceback of HMT_DEBUG, and the offline hub with an empty cache.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REPO,
    Run,
    assert_one_line_failure,
    fingerprint,
    offline_env,
    run_hmt,
    save_state,
    sha256,
    timm_state,
)

from hmt_cli.errors import EXIT_CODES, HmtError

SRC, TGT = "resnet18", "mobilenetv3_small_100"
TINY_SRC, TINY_TGT = "test_resnet", "test_efficientnet"  # where the pair does not matter: faults in the write


def transfer_args(weights: Path | str, out: Path | str, *extra: Any, src: str = SRC, tgt: str = TGT) -> list[Any]:
    return ["transfer", "--src", src, "--tgt", tgt, "--src-weights", weights, "--out", out, "--device", "cpu",
            *extra]


def tiny_args(weights: Path, out: Path, *extra: Any) -> list[Any]:
    return transfer_args(weights, out, *extra, src=TINY_SRC, tgt=TINY_TGT)


@pytest.fixture(scope="module")
def tiny_safetensors(weights_dir: Path) -> Path:
    return save_state(timm_state(TINY_SRC), weights_dir / f"{TINY_SRC}.safetensors")


@pytest.fixture
def fails(cli: Callable[..., Run], out_dir: Path) -> Callable[..., str]:
    """Run ``hmt`` in-process; assert the one-line failure and that no file appeared or changed.

    Every file named in ``args`` (the weights, a config, an existing --out) must keep its bytes.
    """

    def check(args: list[Any], code: int, *fragments: str, inputs: tuple[Path, ...] = (),
              env: dict[str, str | None] | None = None) -> str:
        before = fingerprint(out_dir)
        named = [a for a in args if isinstance(a, Path)] + list(inputs)
        hashes = {p: sha256(p) for p in named if p.is_file()}
        line = assert_one_line_failure(cli(*args, env=env), code, *fragments)
        assert fingerprint(out_dir) == before, "the failed run created, changed or left files in the output dir"
        for path, digest in hashes.items():
            assert sha256(path) == digest, f"{path} changed"
        return line

    return check


# --- model names -------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "name", "suggestion"), [
    ("--src", "resnet5O", "resnet50"),
    ("--tgt", "mobilenetv3_smal_100", "mobilenetv3_small_100"),
    ("--tgt", "efficientnetb0", "efficientnet_b0"),
])
def test_unknown_model_suggests_close_names(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path,
                                            flag: str, name: str, suggestion: str) -> None:
    args = transfer_args(r18_safetensors, out_dir / "x.safetensors")
    args[args.index(flag) + 1] = name
    fails(args, 3, f"unknown model '{name}'", "did you mean", suggestion, inputs=(r18_safetensors,))


def test_unknown_pretrained_tag_lists_tags(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path) -> None:
    args = transfer_args(r18_safetensors, out_dir / "x.safetensors", src="resnet18.bogus")
    fails(args, 3, "tag", "a1_in1k")


# --- source weights ----------------------------------------------------------------------------


def _bad_weights(kind: str, where: Path, good: Path) -> tuple[Path, str]:
    """Write one kind of broken checkpoint; return it and a fragment its error line must contain."""
    data = good.read_bytes()
    path = where / f"{kind}.safetensors"
    if kind == "missing":
        return where / "nope.safetensors", "does not exist"
    if kind == "directory":
        path = where / "adir.safetensors"
        path.mkdir()
        return path, "is a directory"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "is empty"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return path, "not a readable safetensors file"
    if kind == "not_a_checkpoint":
        path = where / "notes.pth"
        path.write_text("these are not the weights you are looking for\n" * 10)
        return path, "neither a safetensors file nor a torch checkpoint"
    if kind == "corrupt_header":  # a valid length prefix, then JSON that is not JSON
        header = b'{"conv1.weight": {"dtype": "F32", "shape": [64, 3, 7, 7], "data_offsets": [0,'
        path.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + len(header):])
        return path, "not a readable safetensors file"
    if kind == "huge_header":  # the length prefix promises more header than the file has
        path.write_bytes((2**40).to_bytes(8, "little") + data[8:])
        return path, "not a readable safetensors file"
    raise AssertionError(kind)


BAD_WEIGHTS = ["missing", "directory", "empty", "truncated", "not_a_checkpoint", "corrupt_header", "huge_header"]


@pytest.mark.parametrize("kind", BAD_WEIGHTS)
def test_unreadable_weights(fails: Callable[..., str], tmp_path: Path, r18_safetensors: Path, out_dir: Path,
                            kind: str) -> None:
    bad, fragment = _bad_weights(kind, tmp_path, r18_safetensors)
    fails(transfer_args(bad, out_dir / "x.safetensors"), 4, fragment, inputs=(bad,))


def test_truncated_torch_checkpoint(fails: Callable[..., str], tmp_path: Path, r18_pth: Path,
                                    out_dir: Path) -> None:
    bad = tmp_path / "cut.pth"
    data = r18_pth.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    fails(transfer_args(bad, out_dir / "x.safetensors"), 4, "not a readable torch checkpoint", inputs=(bad,))


class _Payload:
    """Unpickling this creates ``marker``: a stand-in for a checkpoint that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _malicious(path: Path, marker: Path, fmt: str) -> Path:
    import torch

    state = {"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}, "extra": _Payload(marker)}
    if fmt == "zip":
        torch.save(state, path)
    else:  # the pre-1.6 pickle format: a bare pickle stream
        with open(path, "wb") as fh:
            pickle.dump(state, fh, protocol=2)
    return path


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_code_executing_pickle_is_refused(fails: Callable[..., str], tmp_path: Path, out_dir: Path,
                                          fmt: str) -> None:
    import torch

    # First prove the payload is live: a full unpickle of the same kind of file creates its marker.
    proof_marker = tmp_path / "proof-marker"
    # A bare pickle is no valid legacy torch file (no magic number), but reading it already ran the payload.
    with contextlib.suppress(RuntimeError):
        torch.load(_malicious(tmp_path / f"proof.{fmt}.pth", proof_marker, fmt), weights_only=False)
    assert proof_marker.exists()

    marker = tmp_path / "marker"
    evil = _malicious(tmp_path / f"evil.{fmt}.pth", marker, fmt)
    line = fails(transfer_args(evil, out_dir / "x.safetensors"), 4, "refused", "unsafe", inputs=(evil,))
    assert not marker.exists(), "unpickling ran the checkpoint's code"
    if fmt == "zip":  # names what the file wanted to call (a bare pickle trips first on its tensors)
        assert "io.open" in line


def test_weights_of_another_architecture(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path) -> None:
    line = fails(transfer_args(r18_safetensors, out_dir / "x.safetensors", src="resnet50"), 5,
                 "not a resnet50 checkpoint", inputs=(r18_safetensors,))
    counts = re.search(r"(\d+) missing, (\d+) unexpected, (\d+) mismatched", line)
    assert counts, line
    missing, _, mismatched = (int(g) for g in counts.groups())
    assert missing > 0 and mismatched > 0  # resnet50 has conv3/downsample keys resnet18 lacks, and wider convs


def test_weights_of_another_family(fails: Callable[..., str], weights_dir: Path, out_dir: Path) -> None:
    other = weights_dir / "mobilenetv3_small_100.safetensors"
    if not other.exists():
        save_state(timm_state(TGT), other)
    line = fails(transfer_args(other, out_dir / "x.safetensors"), 5, "missing", "unexpected", "mismatched")
    assert re.search(r"[1-9]\d* missing", line), line


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_source(fails: Callable[..., str], tmp_path: Path, r18_state: dict[str, Any], out_dir: Path,
                           value: float) -> None:
    state = dict(r18_state)
    state["conv1.weight"] = r18_state["conv1.weight"].clone()
    state["conv1.weight"][3, 1, 2, 2] = value
    bad = save_state(state, tmp_path / "nonfinite.safetensors")
    fails(transfer_args(bad, out_dir / "x.safetensors"), 7, "conv1.weight", "NaN/Inf", inputs=(bad,))


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -3])
def test_num_classes_must_be_positive(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path,
                                      n: int) -> None:
    fails(transfer_args(r18_safetensors, out_dir / "x.safetensors", "--num-classes", n), 2, "--num-classes")


@pytest.mark.parametrize(("extra", "fragment"), [
    (("--seed", -1), "--seed"),
    (("--seed", 2**63), "--seed"),
    (("--strategy", "nope"), "unknown strategy"),
    (("--device", "tpu"), "--device"),
    (("--dtype", "int8"), "--dtype"),
    (("--signal-check", "maybe"), "--signal-check"),
    (("--tgt-arg", "img_size"), "KEY=VALUE"),
])
def test_bad_option_values(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path,
                           extra: tuple[Any, ...], fragment: str) -> None:
    fails(transfer_args(r18_safetensors, out_dir / "x.safetensors", *extra), 2, fragment)


def test_missing_src(fails: Callable[..., str], out_dir: Path) -> None:
    fails(["transfer", "--tgt", TGT, "--out", out_dir / "x.safetensors"], 2, "missing --src")


@pytest.mark.parametrize(("text", "fragment"), [
    (None, "does not exist"),
    ("[transfer]\nsede = 3\n", "unknown keys sede"),
    ("[transfer]\nseed = 'zero'\n", "seed must be int"),
    ("[transfer]\nseed = true\n", "seed must be int"),
    ("[transfer\n", "cannot read config"),
])
def test_bad_config_file(fails: Callable[..., str], tmp_path: Path, r18_safetensors: Path, out_dir: Path,
                         text: str | None, fragment: str) -> None:
    config = tmp_path / "preset.toml"
    if text is not None:
        config.write_text(text)
    fails(transfer_args(r18_safetensors, out_dir / "x.safetensors", "--config", config), 2, fragment)


# --- output ------------------------------------------------------------------------------------


def test_output_directory_missing(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path) -> None:
    fails(transfer_args(r18_safetensors, out_dir / "no" / "such" / "x.safetensors"), 8, "does not exist")


def test_output_directory_is_a_file(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path) -> None:
    blocker = out_dir / "file"
    blocker.write_text("a regular file\n")
    fails(transfer_args(r18_safetensors, blocker / "x.safetensors"), 8, "not a directory")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_directory_not_writable_even_for_root(fails: Callable[..., str], r18_safetensors: Path) -> None:
    # os.access says "writable" to root everywhere; /proc refuses new files even to root.
    fails(transfer_args(r18_safetensors, "/proc/hmt-test.safetensors"), 8, "not writable")


def test_output_directory_not_writable(fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
                                       r18_safetensors: Path, out_dir: Path) -> None:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    fails(transfer_args(r18_safetensors, out_dir / "x.safetensors"), 8, "not writable", "permission denied")


def test_out_exists_without_force(fails: Callable[..., str], r18_safetensors: Path, out_dir: Path) -> None:
    existing = out_dir / "x.safetensors"
    existing.write_bytes(b"precious")
    fails(transfer_args(r18_safetensors, existing), 8, "already exists", "--force", inputs=(existing,))
    assert existing.read_bytes() == b"precious"


@pytest.mark.parametrize("how", ["same path", "same path --force", "symlink --force", "relative"])
def test_out_is_the_input(fails: Callable[..., str], r18_state: dict[str, Any], out_dir: Path,
                          monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    weights = save_state(r18_state, out_dir / "w.safetensors")
    out: Path | str = weights
    if how.startswith("symlink"):
        out = out_dir / "link.safetensors"
        out.symlink_to(weights)
    if how == "relative":
        monkeypatch.chdir(out_dir)
        out = "./w.safetensors"
    extra = ("--force",) if how.endswith("--force") else ()
    fails(transfer_args(weights, out, *extra), 8, "input weights file", inputs=(weights,))


def _fake_partial_save(exc: BaseException) -> Callable[..., None]:
    """A safetensors ``save_file`` that writes part of the file, then fails like a full disk (or Ctrl-C)."""

    def save_file(tensors: dict[str, Any], filename: str, metadata: dict[str, str] | None = None) -> None:
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 4096)
        raise exc

    return save_file


@pytest.mark.parametrize("force", [False, True])
def test_disk_full_mid_write(fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tiny_safetensors: Path,
                             out_dir: Path, force: bool) -> None:
    import safetensors.torch

    out = out_dir / "x.safetensors"
    if force:  # a failed overwrite must leave the previous file as it was
        out.write_bytes(b"previous output")
    monkeypatch.setattr(safetensors.torch, "save_file",
                        _fake_partial_save(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))
    extra = ("--force",) if force else ()
    fails(tiny_args(tiny_safetensors, out, *extra), 8, "cannot write", "no space left on device",
          inputs=(tiny_safetensors,))
    assert out.exists() == force


def test_write_error_from_safetensors(fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
                                      tiny_safetensors: Path, out_dir: Path) -> None:
    import safetensors.torch

    # safetensors reports some I/O failures as its own exception type, not OSError.
    monkeypatch.setattr(safetensors.torch, "save_file", _fake_partial_save(RuntimeError("I/O error: write zero")))
    fails(tiny_args(tiny_safetensors, out_dir / "x.safetensors"), 8, "cannot write", "write zero")


def test_ctrl_c_while_writing(fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tiny_safetensors: Path,
                              out_dir: Path) -> None:
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", _fake_partial_save(KeyboardInterrupt()))
    fails(tiny_args(tiny_safetensors, out_dir / "x.safetensors"), 130, "interrupted", "nothing was written")


def test_ctrl_c_before_writing(fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tiny_safetensors: Path,
                               out_dir: Path) -> None:
    import hmt_cli.apply

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(hmt_cli.apply, "apply_plan", interrupted)
    fails(tiny_args(tiny_safetensors, out_dir / "x.safetensors"), 130, "interrupted")


def test_ctrl_c_swallowed_by_a_library_is_still_an_interrupt(fails: Callable[..., str],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              tiny_safetensors: Path, out_dir: Path) -> None:
    """A real SIGINT that native code turns into its own error (as safetensors did in CI) is exit 130."""
    import hmt_cli.apply

    def swallowed(*args: Any, **kwargs: Any) -> None:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("could not determine the shape of object type 'torch.storage.UntypedStorage'") from None

    monkeypatch.setattr(hmt_cli.apply, "apply_plan", swallowed)
    fails(tiny_args(tiny_safetensors, out_dir / "x.safetensors"), 130, "interrupted", "nothing was written")


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see the child's progress")
def test_sigint_mid_transfer(r50_safetensors: Path, out_dir: Path) -> None:
    """A real Ctrl-C: exit 130, one line, no output, no temp file, the input untouched."""
    digest = sha256(r50_safetensors)
    out = out_dir / "init.safetensors"
    # A target whose CPU build takes seconds (vit_large, 304M parameters): with the analyses cached
    # by earlier tests, a mobilenet target finished within the 0.3 s this test waits.
    args = transfer_args(r50_safetensors, out, src="resnet50", tgt="vit_large_patch16_224")
    proc = subprocess.Popen([sys.executable, "-m", "hmt_cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=offline_env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        # The weights are memory-mapped once names and --out are checked: the transfer itself is running.
        while str(r50_safetensors) not in _maps(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.02)
        time.sleep(0.3)  # into analysing the models or building the target, seconds before anything is written
        assert proc.poll() is None, "the transfer finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_one_line_failure(Run(proc.returncode, stdout, stderr), 130, "interrupted", "nothing was written")
    assert fingerprint(out_dir) == {}
    assert sha256(r50_safetensors) == digest


# --- offline hub -------------------------------------------------------------------------------


def test_offline_without_weights_fails_fast(fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path, out_dir: Path) -> None:
    import huggingface_hub.constants

    import hmt_cli.hub

    probes: list[str] = []

    def unreachable(url: str, timeout: float = 0) -> bool:
        probes.append(url)
        return False

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hmt_cli.hub, "reachable", unreachable)
    start = time.monotonic()
    fails(["transfer", "--src", SRC, "--tgt", TGT, "--out", out_dir / "x.safetensors", "--device", "cpu"], 4,
          "cannot reach", "--src-weights", "HF_HUB_OFFLINE", env={"HF_HUB_OFFLINE": None})
    assert probes, "the hub was never probed"
    assert time.monotonic() - start < 30  # huggingface_hub alone retries for ~45 s


def test_offline_env_without_weights_subprocess(tmp_path: Path, out_dir: Path) -> None:
    env = offline_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    start = time.monotonic()
    run = run_hmt("transfer", "--src", SRC, "--tgt", TGT, "--out", out_dir / "x.safetensors", env=env, timeout=120)
    elapsed = time.monotonic() - start
    assert_one_line_failure(run, 4, "not in the local Hugging Face cache", "HF_HUB_OFFLINE", "--src-weights")
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert list(out_dir.iterdir()) == []


# --- the error machinery -----------------------------------------------------------------------


def _table_rows(markdown: str) -> dict[int, str]:
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.+?)\s*\|\s*$", markdown, flags=re.MULTILINE)
    return {int(code): text for code, text in rows}


def test_docs_list_exactly_the_exit_codes() -> None:
    assert _table_rows((REPO / "docs" / "errors.md").read_text(encoding="utf-8")) == EXIT_CODES


def test_readme_lists_the_same_codes() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Exit codes"):].split("\n## ")[0]
    assert set(_table_rows(section)) == set(EXIT_CODES)


def test_every_error_class_has_a_documented_code() -> None:
    import hmt_cli.errors as errors

    classes = [getattr(errors, name) for name in errors.__all__]
    codes = {cls.exit_code for cls in classes if isinstance(cls, type) and issubclass(cls, HmtError)
             and cls is not HmtError}
    assert codes | {0, 1} == set(EXIT_CODES)


def test_internal_error_is_one_line_exit_1(fails: Callable[..., str], monkeypatch: pytest.MonkeyPatch,
                                           r18_safetensors: Path, out_dir: Path) -> None:
    import hmt_cli.pipeline

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("a bug\nspanning lines")

    monkeypatch.setattr(hmt_cli.pipeline, "transfer", broken)
    fails(transfer_args(r18_safetensors, out_dir / "x.safetensors"), 1, "internal error", "a bug spanning lines",
          "HMT_DEBUG=1")


def test_debug_env_shows_the_traceback(cli: Callable[..., Run], r18_safetensors: Path, out_dir: Path) -> None:
    run = cli(*transfer_args(r18_safetensors, out_dir / "x.safetensors", src="resnet5O"), env={"HMT_DEBUG": "1"})
    assert run.code == 3, run  # debugging never changes the outcome
    assert "Traceback (most recent call last)" in run.stderr and "ModelNotFound" in run.stderr, run
    assert run.stderr.strip().splitlines()[-1].startswith("hmt: model not found: "), run


def test_debug_env_in_a_real_process() -> None:
    # A usage error found before torch is imported: the traceback without the cost of a model.
    args = ("transfer", "--src", SRC, "--tgt", TGT, "--dry-run", "--num-classes", "0")
    run = run_hmt(*args, env=offline_env(HMT_DEBUG="1"), timeout=60)
    assert run.code == 2, run
    assert "Traceback (most recent call last)" in run.stderr and "__post_init__" in run.stderr, run
    assert run.stderr.strip().splitlines()[-1].startswith("hmt: usage error: --num-classes"), run


@pytest.mark.parametrize("value", ["0", ""])
def test_debug_env_off_values(cli: Callable[..., Run], value: str) -> None:
    run = cli("transfer", "--src", "resnet5O", "--tgt", TGT, "--dry-run", env={"HMT_DEBUG": value})
    assert_one_line_failure(run, 3, "did you mean")


@pytest.mark.parametrize(("args", "fragment"), [
    (["transfer", "--num-classes", "abc"], "--num-classes"),
    (["transfer", "--bogus"], "--bogus"),
    (["nonsense"], "nonsense"),
])
def test_usage_errors_of_the_entry_point_are_one_line(args: list[str], fragment: str) -> None:
    assert_one_line_failure(run_hmt(*args), 2, "usage error", fragment)


def test_json_mode_failure_prints_nothing_on_stdout(fails: Callable[..., str], r18_safetensors: Path,
                                                    out_dir: Path) -> None:
    fails(transfer_args(r18_safetensors, out_dir / "x.safetensors", "--json", src="resnet5O"), 3, "unknown model")

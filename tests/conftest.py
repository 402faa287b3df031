"""Shared helpers and fixtures: checkpoints the tests create (no hub), CLI runners, failure checks.

Everything is CPU-only and offline. Saved weights and the reference resnet18 -> mobilenetv3_small_100
transfers are session-scoped: several test files read them, and none may modify them.

Test modules import the plain helpers (``from conftest import invoke_cli, ...``); pytest puts
``tests/`` on ``sys.path`` for the conftest, so no path hacks are needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
# The quality benchmark's staged data and weights (../shared, or $HMT_SHARED): tests that run it skip without.
SHARED = Path(os.environ.get("HMT_SHARED") or REPO.parent / "shared")
needs_shared = pytest.mark.skipif(
    not (SHARED / "data" / "cifar10_jpeg.npz").exists() or not (SHARED / "weights").is_dir(),
    reason=f"the benchmark's data and weights are not staged in {SHARED}",
)
TMP_GLOB = ".*.hmt-tmp"  # hmt_cli.io.TMP_SUFFIX: every temp file hmt creates
WIDTH = "120"  # a pinned terminal width keeps Rich's tables (and any line wrapping) reproducible


# --- files -------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(root: Path) -> dict[str, str]:
    """Name -> sha256 of every file under ``root``, hidden temp files included: what a run changed."""
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def tmp_files(directory: Path) -> list[str]:
    """Leftover hmt temp files in ``directory``: there must never be any after a run ends."""
    return sorted(p.name for p in directory.glob(TMP_GLOB))


def save_state(state: dict[str, Any], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def timm_state(name: str, seed: int = 0, **kwargs: Any) -> dict[str, Any]:
    """A randomly initialized timm model's state dict: stands in for pretrained weights."""
    import timm
    import torch

    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).state_dict()


def plan_for(strategy: str, src: str, tgt: str) -> Any:
    """The TransferPlan of ``strategy`` for two timm names (meta-device analyses; no weights)."""
    from hmt_cli.match import get_strategy
    from hmt_cli.pipeline import analyze
    from hmt_cli.plan import make_plan

    s, t = analyze(src), analyze(tgt)
    return make_plan(get_strategy(strategy), s.graph, s.chain, t.graph, t.chain)


def assert_isolates(base: str, variant: str, src: str = "resnet18", tgt: str = "mobilenetv3_large_100") -> None:
    """``variant``'s plan is ``base``'s with ``isolate=1`` added to exactly the rank >= 2 weights ``base``
    writes by ``centre`` (the input layer's among them), every other field of every op unchanged."""
    from dataclasses import replace

    before = {op.tgt_key: op for op in plan_for(base, src, tgt).ops}
    after = {op.tgt_key: op for op in plan_for(variant, src, tgt).ops}
    assert before.keys() == after.keys()
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {k for k, op in before.items() if op.rule == "centre" and len(op.tgt_shape) >= 2
                       and k.endswith("weight")} and "conv_stem.weight" in changed
    assert all(after[k] == replace(before[k], params=(*before[k].params, ("isolate", 1))) for k in changed)


# --- running hmt -------------------------------------------------------------------------------


class Run:
    """What a CLI run left behind, from the runner or from a subprocess."""

    def __init__(self, code: int, stdout: str, stderr: str, exception: BaseException | None = None) -> None:
        self.code = code
        self.stdout = stdout
        self.stderr = stderr
        self.exception = exception

    def __repr__(self) -> str:
        return f"Run(code={self.code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


def invoke_cli(*args: Any, env: dict[str, str | None] | None = None) -> Run:
    """Invoke ``hmt`` in-process through Typer's CliRunner: stdout and stderr kept apart, width pinned.

    The runner sets ``env`` only for the call (None unsets a variable): offline hub, no HMT_DEBUG.
    """
    from typer.testing import CliRunner

    from hmt_cli.cli import app

    runner = CliRunner(env={"COLUMNS": WIDTH, "HF_HUB_OFFLINE": "1", "HMT_DEBUG": None, **(env or {})})
    result = runner.invoke(app, [str(a) for a in args])
    return Run(result.exit_code, result.stdout, result.stderr, result.exception)


def offline_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: offline hub, pinned width, no debug tracebacks."""
    env = {k: v for k, v in os.environ.items() if k != "HMT_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", COLUMNS=WIDTH, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def console_script() -> str:
    """The installed ``hmt`` entry point of this interpreter (not whatever ``hmt`` is first on PATH)."""
    script = Path(sysconfig.get_path("scripts")) / "hmt"
    found = str(script) if script.exists() else shutil.which("hmt")
    if found is None:
        pytest.skip("the hmt console script is not installed (pip install -e .)")
    return found


def run_hmt(*args: Any, module: bool = True, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    """Run ``python -m hmt_cli`` (or, with ``module=False``, the ``hmt`` console script) as a real process."""
    command = [sys.executable, "-m", "hmt_cli"] if module else [console_script()]
    proc = subprocess.run([*command, *(str(a) for a in args)], capture_output=True, text=True, timeout=timeout,
                          env=env or offline_env(), cwd=REPO)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_failure(run: Run, code: int, *fragments: str) -> str:
    """Exit ``code``, exactly one line on stderr (no traceback) that mentions ``fragments``, empty stdout."""
    assert run.code == code, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run
    line = lines[0]
    assert line.startswith("hmt: "), run
    assert "Traceback" not in run.stderr, run
    for fragment in fragments:
        assert fragment.lower() in line.lower(), (fragment, line)
    assert run.stdout == "", run
    return line


@dataclass(frozen=True)
class Transfer:
    """One finished ``hmt transfer`` run: what it printed, its output and its --report file."""

    run: Run
    out: Path
    report: Path | None = None


def r18_transfer_args(weights: Path, out: Path, *extra: Any) -> list[Any]:
    return ["transfer", "--src", "resnet18", "--tgt", "mobilenetv3_small_100", "--src-weights", weights,
            "--out", out, "--device", "cpu", "--seed", 0, *extra]


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def analysis_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hmt's analysis cache in a per-session folder (subprocesses inherit it), never the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("hmt-cache")
    os.environ["HMT_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="session")
def r18_state() -> dict[str, Any]:
    """resnet18's state dict (seed 0). Read-only: copy before changing a tensor."""
    return timm_state("resnet18")


@pytest.fixture(scope="session")
def r18_safetensors(weights_dir: Path, r18_state: dict[str, Any]) -> Path:
    return save_state(r18_state, weights_dir / "resnet18.safetensors")


@pytest.fixture(scope="session")
def r18_pth(weights_dir: Path, r18_state: dict[str, Any]) -> Path:
    """A torch checkpoint as training scripts write it: a ``state_dict`` key, DDP's ``module.`` prefix."""
    import torch

    path = weights_dir / "resnet18_ddp.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in r18_state.items()}}, path)
    return path


@pytest.fixture(scope="session")
def r50_safetensors(weights_dir: Path) -> Path:
    """resnet50 (25M params): a transfer long enough to interrupt, and the issue's flagship pair."""
    return save_state(timm_state("resnet50"), weights_dir / "resnet50.safetensors")


@pytest.fixture(scope="session")
def r18_mbv3_in_process(tmp_path_factory: pytest.TempPathFactory, r18_safetensors: Path) -> Transfer:
    """resnet18 -> mobilenetv3_small_100 through the CliRunner, with --json and --report."""
    where = tmp_path_factory.mktemp("r18_mbv3_in_process")
    out, report = where / "init.safetensors", where / "report.json"
    run = invoke_cli(*r18_transfer_args(r18_safetensors, out, "--json", "--report", report))
    assert run.code == 0, run
    return Transfer(run, out, report)


@pytest.fixture(scope="session")
def r18_mbv3_subprocess(tmp_path_factory: pytest.TempPathFactory, r18_safetensors: Path) -> Transfer:
    """The same transfer in a fresh process through the installed ``hmt`` console script, with --json."""
    out = tmp_path_factory.mktemp("r18_mbv3_subprocess") / "init.safetensors"
    run = run_hmt(*r18_transfer_args(r18_safetensors, out, "--json"), module=False)
    assert run.code == 0, run
    return Transfer(run, out)


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """An empty directory for outputs: tests check that nothing else appears in it."""
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def cli() -> Callable[..., Run]:
    return invoke_cli

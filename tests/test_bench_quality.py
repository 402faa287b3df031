"""The quality benchmark's smoke profile: runs end to end on CPU, offline, in under a minute.

It checks the *structure* of what the benchmark writes (numbers from a handful of images mean nothing):
the runs list and its keys, accuracies as fractions, the markdown tables, the inits every profile must
have. It needs the staged data in ../shared (or $HMT_SHARED) and pyyaml (the `bench` extra).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SHARED, needs_shared

RUN_KEYS = {
    "arm",
    "dataset",
    "target",
    "init",
    "seed",
    "acc_final",
    "acc_early",
    "frac_params_written",
    "curve",
    "train_s",
    "epochs",
    "n_train",
    "n_eval",
}

pytest.importorskip("yaml", reason="the quality benchmark reads configs/bench/*.yaml (pip install pyyaml)")
pytestmark = needs_shared


def _run_smoke(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HMT_DEBUG"} | {
        "HF_HUB_OFFLINE": "1",
        "HMT_SHARED": str(SHARED),
    }
    # The budget is a safety net for loaded CI machines; on an idle 2-core box the run takes ~30 s.
    proc = subprocess.run(
        [sys.executable, "benchmarks/quality.py", "--profile", "smoke", "--out", str(out), "--budget-min", "5",
         *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("quality-smoke")
    return out, _run_smoke(out)


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_writes_results_files(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = smoke
    assert (out / "results.json").is_file() and (out / "results.md").is_file()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (out / "curves.png").stat().st_size > 0


def test_results_json_structure(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    data = _results(smoke[0])
    assert data["profile"] == "smoke"
    assert data["status"] == "complete", data["skipped"]
    assert {"torch", "timm", "hmt", "device", "cpu_count"} <= set(data["environment"])
    assert set(data["config"]["arms"]) == {"arm1", "arm2"}
    assert all(arm["drops"] for arm in data["config"]["arms"].values())
    runs = data["runs"]
    assert runs
    for run in runs:
        assert set(run) >= RUN_KEYS, sorted(RUN_KEYS - set(run))
        assert 0.0 <= run["acc_final"] <= 1.0
        assert run["acc_early"] is None or 0.0 <= run["acc_early"] <= 1.0
        assert run["frac_params_written"] is None or 0.0 <= run["frac_params_written"] <= 1.0
        assert all(0.0 <= acc <= 1.0 for _, acc in run["curve"])


def test_every_arm_has_scratch_and_paper(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    runs = _results(smoke[0])["runs"]
    for arm in ("arm1", "arm2"):
        inits = {r["init"] for r in runs if r["arm"] == arm}
        assert {"scratch", "paper"} <= inits, (arm, inits)
    scratch = [r for r in runs if r["init"] == "scratch"]
    assert all(r["frac_params_written"] == 0.0 == r["frac_params_from_source"] for r in scratch)
    paper = [r for r in runs if r["init"] == "paper"]
    assert all(r["frac_params_written"] > 0.0 for r in paper)
    # paper stacks the source cyclically over the whole tensor: every written value is a source value
    assert all(r["frac_params_from_source"] == pytest.approx(r["frac_params_written"]) for r in paper)
    upper = [r for r in runs if r["init"] == "upper"]
    assert all(r["frac_params_from_source"] == r["frac_params_written"] > 0.9 for r in upper)
    # block pads arm 2's narrow ResNet-56 (16-64 channels) inside wider test_resnet layers' init
    block2 = [r for r in runs if r["init"] == "block" and r["arm"] == "arm2"]
    assert block2 and all(0 < r["frac_params_from_source"] < r["frac_params_written"] for r in block2)
    # arm 1 pre-trains the target itself on the source's task: the ceiling a transfer is measured against
    assert any(r["init"] == "upper" for r in runs if r["arm"] == "arm1")


def test_dpiat_runs_or_is_skipped_with_a_reason(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    data = _results(smoke[0])
    ran = any(r["init"] == "dpiat" for r in data["runs"])
    skipped = [s for s in data["skipped"] if s["init"] == "dpiat"]
    assert ran or (skipped and all(s["reason"] for s in skipped))


def test_results_md_tables(smoke: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    md = (smoke[0] / "results.md").read_text()
    assert "## arm1" in md and "## arm2" in md
    assert "| target | init | seeds | final acc % |" in md
    assert "gain vs scratch" in md and "recovery" in md and "params written" in md and "source values" in md
    assert "Profile drops:" in md


def test_source_checkpoint_is_cached_and_ignored_by_git(
    smoke: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    cache = smoke[0] / "cache"
    assert list(cache.glob("pretrain-resnet18-*.safetensors"))
    assert (cache / ".gitignore").read_text().strip() == "*"


def test_a_cached_source_that_changed_is_refused(
    smoke: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """A checkpoint saved over in the cache (by anything but the benchmark) must not be used as the source."""
    import shutil

    from safetensors.torch import load_file, save_file

    cache = tmp_path / "cache"
    shutil.copytree(smoke[0] / "cache", cache)
    ckpt = next(cache.glob("pretrain-resnet18-*.safetensors"))
    assert len(json.loads(ckpt.with_suffix(".json").read_text())["sha256"]) == 64
    state = load_file(str(ckpt))
    state["bn1.weight"] = torch.full_like(state["bn1.weight"], 0.5)
    save_file(state, str(ckpt))
    out = tmp_path / "out"
    _run_smoke(out, "--cache", str(cache), "--config", str(REPO / "configs" / "bench" / "arm1.yaml"))
    results = _results(out)
    assert not [r for r in results["runs"] if r["init"] not in ("scratch", "upper")], results["runs"]
    assert any("changed since it was trained" in s["reason"] and s.get("arm") == "arm1"
               for s in results["skipped"]), results["skipped"]


def test_workers_run_the_same_plan_in_parallel_shards(
    smoke: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """``--workers 2``: one process per (arm, dataset, target), merged into one results.json with the same runs
    (the source is pre-trained once, by the parent, and read from the shared cache by its shards)."""
    _run_smoke(tmp_path, "--workers", "2", "--cache", str(smoke[0] / "cache"))
    serial, sharded = _results(smoke[0]), _results(tmp_path)
    assert sharded["status"] == "complete", sharded["skipped"]

    def key(r: dict) -> tuple:
        return r["arm"], r["dataset"], r["target"], r["init"], r["seed"]

    assert sorted(map(key, sharded["runs"])) == sorted(map(key, serial["runs"]))
    assert {s["name"] for s in sharded["shards"]} == {
        "arm1-cifar10_odd-test_resnet-upper", "arm1-cifar10_odd-test_resnet", "arm2-fashion_mnist-test_resnet"
    }
    assert all(s["returncode"] == 0 for s in sharded["shards"])
    assert set(sharded["sources"]) >= {"arm1", "arm2", "arm1/upper"}
    assert (tmp_path / "shards" / "arm2-fashion_mnist-test_resnet" / "results.json").is_file()
    assert "| target | init | seeds | final acc % |" in (tmp_path / "results.md").read_text()


def test_the_untrained_control_transfers_the_same_plan_from_a_random_init_source(
    smoke: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """``paper@untrained``: paper's transfer, from the source model at its seed-0 init, not the trained one."""
    out = tmp_path / "out"
    _run_smoke(out, "--cache", str(smoke[0] / "cache"), "--config", str(REPO / "configs" / "bench" / "arm1.yaml"),
               "--inits", "paper,paper@untrained")
    runs = {r["init"]: r for r in _results(out)["runs"]}
    assert set(runs) == {"paper", "paper@untrained"}, _results(out)["skipped"]
    trained, control = runs["paper"]["details"], runs["paper@untrained"]["details"]
    assert trained["strategy"] == control["strategy"] == "paper"
    assert trained["src_weights"].startswith("sha256:") and control["src_weights"].startswith("sha256:")
    assert control["src_weights"] != trained["src_weights"]
    assert runs["paper"]["frac_params_written"] == runs["paper@untrained"]["frac_params_written"] > 0


def test_untrained_source_is_the_source_model_at_its_seed_0_init(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import load_file

    from benchmarks._quality_config import SourceSpec
    from benchmarks._quality_inits import split_control, untrained_source

    assert split_control("block@untrained") == ("block", True) and split_control("block") == ("block", False)
    path = untrained_source(SourceSpec("test_resnet", {}, None), 5, tmp_path / "u.safetensors")
    torch.manual_seed(0)
    want = timm.create_model("test_resnet", num_classes=5).state_dict()
    got = load_file(str(path))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)

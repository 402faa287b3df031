"""benchmarks/pool.py: pooling quality runs from several calls, and refusing what must not be pooled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import pool

ENV = {"device": "cuda: NVIDIA H200", "torch_threads": 1}
SOURCE = {"arm2": {"model": "benchmarks.cifar_resnet:resnet56", "origin": "checkpoint r56.th", "acc_eval": 0.8322}}


def _run(init: str, seed: int, acc: float, target: str = "resnet50") -> dict[str, Any]:
    return {"arm": "arm2", "dataset": "fashion_mnist", "target": target, "init": init, "seed": seed,
            "acc_final": acc}


def _results(path: Path, runs: list[dict[str, Any]], env: dict[str, Any] = ENV,
             sources: dict[str, Any] = SOURCE) -> Path:
    header = {"profile": "full", "environment": env, "sources": sources,
              "config": {"arms": {"arm2": {"description": "the arm"}}}}
    path.write_text(json.dumps({**header, "runs": runs}))
    return path


def test_pools_seeds_and_inits_from_separate_calls_and_a_log(tmp_path: Path) -> None:
    a = _results(tmp_path / "a.json", [_run("scratch", 0, 0.50), _run("block", 0, 0.60)])
    b = _results(tmp_path / "b.json", [_run("scratch", 1, 0.52), _run("scratch", 0, 0.50)])  # seed 0 repeated
    log = tmp_path / "c.log"
    log.write_text("[   80.8s] arm2 fashion_mnist resnet50 block seed 1: final 61.0% early 30.0% (init 1s)\n"
                   "[   81.0s] arm2 fashion_mnist resnet50 shard started\n"
                   # quality.py's line for a run without an accuracy: not a 0.0% to pool
                   "[   82.0s] arm2 fashion_mnist resnet50 scratch seed 2: final — early — (init 1s)\n")
    out = tmp_path / "out"
    assert pool.main(["--out", str(out), str(a), str(b), str(log)]) == 0
    data = json.loads((out / "results.json").read_text())
    got = {(r["init"], r["seed"]): r["acc_final"] for r in data["runs"]}
    assert got == {("scratch", 0): 0.50, ("scratch", 1): 0.52, ("block", 0): 0.60, ("block", 1): 0.61}
    md = (out / "results.md").read_text()
    # block: seeds 0 and 1, paired gains +10 and +9 -> +9.5 over scratch.
    assert "| resnet50 | block | 2 | 60.5 ± 0.7 |" in md and "+9.5" in md
    assert data["command"].startswith("python benchmarks/pool.py --out")


def test_a_run_that_disagrees_between_inputs_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _results(tmp_path / "a.json", [_run("block", 0, 0.600)])
    b = _results(tmp_path / "b.json", [_run("block", 0, 0.6004)])  # within a log's rounding: the same run
    c = _results(tmp_path / "c.json", [_run("block", 0, 0.620)])
    assert pool.main(["--out", str(tmp_path / "ok"), str(a), str(b)]) == 0
    assert pool.main(["--out", str(tmp_path / "bad"), str(a), str(c)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: arm2 fashion_mnist resnet50 block 0: 60.00%") and "62.00%" in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(("env", "sources"), [
    ({**ENV, "torch_threads": 2}, SOURCE),  # a CPU run repeats only at one thread count
    ({**ENV, "device": "cpu: AMD EPYC"}, SOURCE),
    (ENV, {"arm2": {**SOURCE["arm2"], "acc_eval": 0.90}}),  # a source trained again
])
def test_inputs_from_another_source_device_or_thread_count_are_refused(
        tmp_path: Path, env: dict[str, Any], sources: dict[str, Any]) -> None:
    a = _results(tmp_path / "a.json", [_run("block", 0, 0.60)])
    b = _results(tmp_path / "b.json", [_run("block", 1, 0.61)], env=env, sources=sources)
    assert pool.main(["--out", str(tmp_path / "out"), str(a), str(b)]) == 2


def test_arms_selects_what_is_pooled_and_checked(tmp_path: Path) -> None:
    other = {"arm": "arm1", "dataset": "cifar10_odd", "target": "resnet50", "init": "block", "seed": 0,
             "acc_final": 0.3}
    a = _results(tmp_path / "a.json", [_run("block", 0, 0.60), other])
    # b's arm-1 source differs from a's (recorded checksums), which only matters when arm1 is pooled.
    b = _results(tmp_path / "b.json", [_run("block", 1, 0.61), {**other, "seed": 1}],
                 sources={**SOURCE, "arm1": {"model": "resnet18", "sha256": "b"}})
    a_data = json.loads(a.read_text())
    a.write_text(json.dumps({**a_data, "sources": {**SOURCE, "arm1": {"model": "resnet18", "sha256": "a"}}}))
    assert pool.main(["--out", str(tmp_path / "all"), str(a), str(b)]) == 2
    assert pool.main(["--out", str(tmp_path / "arm2"), "--arms", "arm2", str(a), str(b)]) == 0
    runs = json.loads((tmp_path / "arm2" / "results.json").read_text())["runs"]
    assert {r["arm"] for r in runs} == {"arm2"} and len(runs) == 2

"""The quality benchmark's parallel shards (``--workers``) and its paired gains: pure parts, no training."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import _quality_shards as shards
from benchmarks._quality_report import summarize


def _arm(name: str, datasets: list[str], targets: list[str], inits: tuple[str, ...], upper: set[str]) -> Any:
    return SimpleNamespace(
        arm=name,
        datasets=[SimpleNamespace(name=d) for d in datasets],
        targets=[SimpleNamespace(name=t) for t in targets],
        inits=inits,
        has_upper=lambda t: t in upper,
    )


def test_plan_shards_one_per_arm_dataset_target_upper_first() -> None:
    arms = [
        _arm("arm1", ["odd"], ["a", "b"], ("scratch", "centre", "upper"), {"b"}),
        _arm("arm2", ["fm", "c10"], ["a"], ("scratch",), set()),
        _arm("arm3", ["x"], ["c"], ("upper",), {"c"}),
    ]
    plan = shards.plan_shards(arms, [Path("1.yaml"), Path("2.yaml"), Path("3.yaml")])
    names = ["arm1-odd-b-upper", "arm3-x-c-upper", "arm1-odd-a", "arm1-odd-b", "arm2-fm-a", "arm2-c10-a"]
    assert [s.name for s in plan] == names
    by = {s.name: s for s in plan}
    assert [s.cost for s in plan] == [1, 1, 0, 0, 0, 0]
    # A target's upper runs are their own shard: they start without the source, the rest runs beside them.
    assert (by["arm1-odd-b-upper"].inits, by["arm1-odd-b-upper"].needs_source) == ("upper", False)
    assert (by["arm1-odd-b"].inits, by["arm1-odd-b"].needs_source) == ("scratch,centre", True)
    assert (by["arm1-odd-a"].inits, by["arm1-odd-a"].needs_source) == ("", True)  # the run's own inits
    assert by["arm2-fm-a"].needs_source is False  # scratch alone never reads the source
    assert by["arm2-fm-a"].config == Path("2.yaml") and by["arm2-fm-a"].dataset == "fm"


def test_shard_argv_passes_run_wide_options_through() -> None:
    shard = shards.Shard("arm2-fm-a", "arm2", Path("c.yaml"), "fm", "a", 0)
    args = SimpleNamespace(profile="full", device="cuda", seeds=2, inits="scratch,centre", strategies=None,
                           eval_every=5, upper_targets="resnet50")  # fmt: skip
    argv = shards.shard_argv(shard, args, Path("/o"), Path("/c"), Path("/s"), 3.25, 2)
    joined = " ".join(argv)
    for part in ("--profile full", "--config c.yaml", "--datasets fm", "--targets a", "--out /o/shards/arm2-fm-a",
                 "--cache /c", "--device cuda", "--budget-min 3.250", "--threads 2", "--seeds 2",
                 "--inits scratch,centre", "--eval-every 5", "--upper-targets resnet50"):  # fmt: skip
        assert part in joined
    assert "--strategies" not in argv
    upper = shards.Shard("arm1-odd-a-upper", "arm1", Path("c.yaml"), "odd", "a", 1, "upper", False)
    argv = shards.shard_argv(upper, args, Path("/o"), Path("/c"), Path("/s"), 3.25, 2)
    assert argv[argv.index("--inits") + 1] == "upper" and "--out /o/shards/arm1-odd-a-upper" in " ".join(argv)


def _fake_shard(body: str) -> list[str]:
    return [sys.executable, "-c", body]


def test_run_shards_waits_for_the_source_then_runs_everything(tmp_path: Path) -> None:
    plan = [shards.Shard(f"arm{i}-d-t", f"arm{i}", Path("x"), "d", "t", 0) for i in (1, 2)]
    plan.insert(0, shards.Shard("arm1-d-t-upper", "arm1", Path("x"), "d", "t", 1, "upper", False))
    state = {"arm1": "wait", "arm2": "ready"}

    def readiness(shard: shards.Shard) -> str:  # as quality.run_sharded: source-free shards never wait
        return state[shard.arm] if shard.needs_source else "ready"

    order: list[str] = []

    def between() -> None:  # the parent's pre-training: arm1's shard may start only afterwards
        order.append("between")
        state["arm1"] = "ready"

    def argv_for(shard: shards.Shard) -> list[str]:
        order.append(shard.name)
        return _fake_shard("pass")

    done = shards.run_shards(plan, argv_for, readiness, 4, time.perf_counter() + 60, tmp_path, lambda m: None,
                             between=between)  # fmt: skip
    assert order == ["arm1-d-t-upper", "arm2-d-t", "between", "arm1-d-t"]
    assert sorted(d["name"] for d in done) == ["arm1-d-t", "arm1-d-t-upper", "arm2-d-t"]
    assert all(d["returncode"] == 0 for d in done)


def test_run_shards_drops_an_arm_whose_source_failed(tmp_path: Path) -> None:
    plan = [shards.Shard("arm1-d-t", "arm1", Path("x"), "d", "t", 0)]
    done = shards.run_shards(plan, lambda s: _fake_shard("pass"), lambda shard: "drop", 2, time.perf_counter() + 60,
                             tmp_path, lambda m: None)  # fmt: skip
    assert done == [{"name": "arm1-d-t", "returncode": None, "wall_s": 0.0, "log": None,
                     "reason": "not run: its arm's source could not be prepared"}]  # fmt: skip


def test_run_shards_stops_shards_past_the_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "GRACE_S", 0.0)
    plan = [shards.Shard("arm1-d-t", "arm1", Path("x"), "d", "t", 0)]
    start = time.perf_counter()
    done = shards.run_shards(plan, lambda s: _fake_shard("import time; time.sleep(60)"), lambda shard: "ready", 1,
                             start, tmp_path, lambda m: None)  # fmt: skip
    assert time.perf_counter() - start < 30
    assert done[0]["returncode"] not in (0, None)  # SIGTERM, not a normal exit


def test_merge_shard_results_concatenates_and_reports_the_worst_status(tmp_path: Path) -> None:
    def write(name: str, status: str, runs: list[dict], sources: dict) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        doc = {"status": status, "runs": runs, "skipped": [{"reason": "budget: x"}] * (status != "complete"),
               "sources": sources}  # fmt: skip
        (folder / "results.json").write_text(json.dumps(doc))
        return folder

    a = write("a", "complete", [{"seed": 0}], {"arm1": {"acc": 1}, "arm1/upper": {"t1": {"x": 1}}})
    b = write("b", "partial", [{"seed": 1}, {"seed": 2}], {"arm1": {"acc": 2}, "arm1/upper": {"t2": {"x": 2}}})
    data: dict = {"runs": [], "skipped": [], "sources": {}}
    status = shards.merge_shard_results(data, [a, b, tmp_path / "never-ran"])
    assert status == "partial"
    assert [r["seed"] for r in data["runs"]] == [0, 1, 2]
    assert data["sources"]["arm1"] == {"acc": 1}  # the first writer wins: every shard reads the same source
    assert data["sources"]["arm1/upper"] == {"t1": {"x": 1}, "t2": {"x": 2}}
    assert {"shard": "never-ran", "reason": "shard wrote no results.json"} in data["skipped"]


def _run(init: str, seed: int, acc: float) -> dict:
    return {"arm": "a", "dataset": "d", "target": "t", "init": init, "seed": seed, "acc_final": acc}


def test_gain_is_paired_by_seed_when_a_cut_leaves_seeds_missing() -> None:
    runs = [_run("scratch", 0, 0.40), _run("centre", 0, 0.45), _run("centre", 1, 0.20), _run("upper", 0, 0.50)]
    groups = {g.init: g for g in summarize(runs)}
    centre = groups["centre"]
    # seed 1 has no scratch run: an unpaired difference of means would say -7.5 points
    assert centre.gain == pytest.approx(0.05) and centre.gain_seeds == 1 and centre.n == 2
    assert centre.recovery == pytest.approx(0.5)


def test_gain_with_every_seed_equals_the_difference_of_means() -> None:
    runs = [_run("scratch", s, a) for s, a in enumerate((0.40, 0.50, 0.45))]
    runs += [_run("centre", s, a) for s, a in enumerate((0.47, 0.52, 0.50))]
    centre = {g.init: g for g in summarize(runs)}["centre"]
    assert centre.gain == pytest.approx((0.47 + 0.52 + 0.50 - 0.40 - 0.50 - 0.45) / 3)
    assert centre.gain_seeds == 3


def test_merge_keeps_interrupted_over_a_later_partial_shard(tmp_path: Path) -> None:
    for name, status in (("a", "interrupted"), ("b", "partial"), ("c", "complete")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({"status": status, "runs": [], "skipped": []}))
    data: dict = {"runs": [], "skipped": [], "sources": {}}
    assert shards.merge_shard_results(data, [tmp_path / n for n in "abc"]) == "interrupted"

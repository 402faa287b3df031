"""Parallel shards of one quality run: ``quality.py --workers N``.

One fine-tuning run of these small models at 32-64 px cannot fill a GPU: each step is a few hundred tiny
kernels, so a lone process leaves the device idle between launches. N processes, each running one
(arm, dataset, target) of the plan, share the GPU (and the CPU cores) and finish the protocol several times
sooner. Every shard is an ordinary ``quality.py`` invocation restricted with ``--config``, ``--datasets`` and
``--targets``, writing its own results folder; the parent merges them into one ``results.json``.

What must not run twice is trained first, in the parent: an arm whose source is pre-trained by the
benchmark launches its shards only once that source is in the cache. A target's ``upper`` runs are a shard
of their own, launched first and without waiting for the source (pre-training the target is the longest
single job, and it needs no source); arm 1 has one dataset, so no two shards pre-train the same target.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Shard", "SOURCE_FREE_INITS", "needs_source", "plan_shards", "shard_argv", "run_shards", "merge_shard_results",
]

GRACE_S = 90.0  # after the deadline a shard finishes the run it is in (its own budget stops new ones)


@dataclass(frozen=True)
class Shard:
    name: str  # also its results folder: <out>/shards/<name>
    arm: str
    config: Path
    dataset: str
    target: str
    cost: int  # launch order, most expensive first: an `upper` shard pre-trains its target
    inits: str = ""  # comma-separated inits of this shard; "" = the run's own
    needs_source: bool = True  # waits until its arm's source is prepared


# Inits that never read the source: a shard of only these starts at once.
SOURCE_FREE_INITS = frozenset({"scratch", "upper"})


def needs_source(inits: Sequence[str]) -> bool:
    """Whether any of ``inits`` reads the arm's source (hmt strategies, the "strategies" token, dpiat)."""
    return any(i not in SOURCE_FREE_INITS for i in inits)


def plan_shards(arms: Sequence[Any], configs: Sequence[Path]) -> list[Shard]:
    """One shard per (arm, dataset, target), plus one per target's ``upper`` runs; the expensive ones first."""
    shards = []
    for arm, config in zip(arms, configs, strict=True):
        for ds in arm.datasets:
            for target in arm.targets:
                name = f"{arm.arm}-{ds.name}-{target.name}"
                others = [i for i in arm.inits if i != "upper"]
                if "upper" in arm.inits and arm.has_upper(target.name):
                    shards.append(Shard(f"{name}-upper", arm.arm, config, ds.name, target.name, 1, "upper", False))
                    if not others:
                        continue
                    inits = ",".join(others)
                else:
                    inits = ""
                shards.append(Shard(name, arm.arm, config, ds.name, target.name, 0, inits, needs_source(others)))
    return sorted(shards, key=lambda s: -s.cost)  # stable: the config's order within a cost


def shard_argv(
    shard: Shard, args: Any, out: Path, cache: Path, shared: Path, budget_min: float, threads: int
) -> list[str]:
    """The ``quality.py`` command line of one shard; the run-wide options pass through unchanged."""
    argv = [
        sys.executable, str(Path(__file__).with_name("quality.py")),
        "--profile", args.profile, "--config", str(shard.config),
        "--datasets", shard.dataset, "--targets", shard.target,
        "--out", str(out / "shards" / shard.name), "--cache", str(cache), "--shared", str(shared),
        "--device", args.device, "--budget-min", f"{budget_min:.3f}", "--threads", str(threads),
    ]  # fmt: skip
    for flag in ("seeds", "inits", "strategies", "eval_every", "upper_targets"):
        value = shard.inits if flag == "inits" and shard.inits else getattr(args, flag)
        if value:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for module in getattr(args, "strategy_module", None) or ():
        argv += ["--strategy-module", module]
    return argv


@dataclass
class _Running:
    shard: Shard
    proc: subprocess.Popen
    started: float
    log: Any


def run_shards(
    shards: Sequence[Shard],
    argv_for: Callable[[Shard], list[str]],
    readiness: Callable[[Shard], str],
    workers: int,
    deadline: float,
    logs: Path,
    say: Callable[[str], None],
    between: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Launch shards as their arm becomes ready and a worker is free; wait for all, or stop them
    (SIGTERM: they write partial results) ``GRACE_S`` after ``deadline``. ``between()`` is called once
    after the first launches: the parent's own work (pre-training a source) overlaps the ready shards.
    ``readiness(shard)`` is "ready", "wait" (its arm's source is still being trained) or "drop" (it failed:
    the shard is recorded as not run). Returns one record per shard: name, exit code, wall seconds, log."""
    logs.mkdir(parents=True, exist_ok=True)
    pending: list[Shard] = list(shards)
    running: list[_Running] = []
    done: list[dict[str, Any]] = []
    called_between = False
    try:
        while pending or running:
            for shard in [s for s in pending if readiness(s) == "drop"]:
                pending.remove(shard)
                done.append({"name": shard.name, "returncode": None, "wall_s": 0.0, "log": None,
                             "reason": "not run: its arm's source could not be prepared"})  # fmt: skip
            for shard in [s for s in pending if readiness(s) == "ready"]:
                if len(running) >= workers:
                    break
                pending.remove(shard)
                log = open(logs / f"{shard.name}.log", "wb")  # noqa: SIM115 -- closed when the shard ends
                proc = subprocess.Popen(argv_for(shard), stdout=log, stderr=subprocess.STDOUT)
                running.append(_Running(shard, proc, time.perf_counter(), log))
                say(f"shard {shard.name} started (pid {proc.pid})")
            if not called_between:
                called_between = True
                between()
                continue
            if time.perf_counter() > deadline + GRACE_S:
                for r in running:
                    r.proc.send_signal(signal.SIGTERM)
                pending.clear()
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                r.log.close()
                wall = time.perf_counter() - r.started
                done.append({"name": r.shard.name, "returncode": r.proc.returncode, "wall_s": round(wall, 1),
                             "log": str(logs / f"{r.shard.name}.log")})  # fmt: skip
                say(f"shard {r.shard.name} finished: exit {r.proc.returncode} after {wall:.0f}s")
            if pending and not running and all(readiness(s) == "wait" for s in pending):
                raise RuntimeError(f"shards {[s.name for s in pending]} wait for a source that is never prepared")
            time.sleep(0.5)
    finally:  # Ctrl-C / SIGTERM of the parent, or an error: no shard outlives it
        for r in running:
            r.proc.send_signal(signal.SIGTERM)
        for r in running:
            r.proc.wait()
            r.log.close()
    return done


def merge_shard_results(data: dict[str, Any], folders: Sequence[Path]) -> str:
    """Fold each shard's ``results.json`` into ``data`` (runs, skips, sources); the merged status:
    ``complete`` only when every shard completed."""
    statuses = []
    for folder in folders:
        path = folder / "results.json"
        if not path.exists():
            data["skipped"].append({"shard": folder.name, "reason": "shard wrote no results.json"})
            statuses.append("partial")
            continue
        shard = json.loads(path.read_text(encoding="utf-8"))
        data["runs"].extend(shard.get("runs", []))
        data["skipped"].extend(shard.get("skipped", []))
        for key, info in shard.get("sources", {}).items():
            _merge_source(data["sources"], key, info)
        statuses.append(shard.get("status", "partial"))
    # the worst one wins, whatever the order: an interrupted shard is not hidden by a later partial one
    for worst in ("interrupted", "partial"):
        if worst in statuses:
            return worst
    return "complete" if all(s == "complete" for s in statuses) else "partial"


def _merge_source(sources: dict[str, Any], key: str, info: Mapping[str, Any]) -> None:
    if key.endswith("/upper"):  # {target: info} per arm: each shard contributes its own target
        sources.setdefault(key, {}).update(info)
    else:
        sources.setdefault(key, dict(info))


def worker_threads(workers: int) -> int:
    """CPU threads per shard: the cores split evenly (transfers, DPIAT and JPEG decoding run on the CPU)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(workers, 1))

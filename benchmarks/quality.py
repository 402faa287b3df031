#!/usr/bin/env python3
"""The hmt quality benchmark (issue 4): does a transferred start actually help fine-tuning on real data?

    python benchmarks/quality.py --profile quick            # <= 20 min on a 2-core CPU
    python benchmarks/quality.py --profile cpu              # quick + the CNN arm-1 targets, 3 seeds: ~55 min
    python benchmarks/quality.py --profile full --device cuda --workers 14   # the protocol on one GPU
    python benchmarks/quality.py --profile smoke --out /tmp/q   # CI structure check, < 1 min
    python benchmarks/quality.py --render benchmarks/results/quality-quick   # re-render md/png from json

Arms and profiles live in ``configs/bench/arm*.yaml``; the protocol and the columns are in docs/quality.md.
Transfers go through :func:`hmt_cli.pipeline.transfer`, the function the CLI calls. The run writes
``results.json`` + ``results.md`` after every fine-tuning run, so a budget cut, a crash or Ctrl-C still
leaves partial results behind.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable for `benchmarks.*`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# OpenMP threads spin at every barrier by default. On a shared CPU (CI, a laptop running tests) a descheduled
# peer thread then makes the other spin for its whole time slice: measured on a loaded 2-core box, two threads
# trained 18x slower than with PASSIVE, and one thread beat two. PASSIVE costs ~nothing on an idle machine.
# Only effective before torch is imported, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import nn

from benchmarks._quality_config import PROFILES, ArmConfig, TargetSpec, load_arm
from benchmarks._quality_data import DataSpec, ImageSet, load_split, resolve_shared
from benchmarks._quality_inits import (
    InitResult,
    build_source,
    create_target,
    dpiat_init,
    head_state,
    hmt_init,
    load_state,
    recipe_key,
    save_state,
    set_head,
    slug,
    split_control,
    untrained_source,
    upper_init,
)
from benchmarks._quality_report import plot_curves, render_markdown
from benchmarks._quality_shards import (
    merge_shard_results,
    needs_source,
    plan_shards,
    run_shards,
    shard_argv,
    worker_threads,
)
from benchmarks._quality_train import Runtime, accuracy, train
from hmt_cli.io import sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIGS = (REPO_ROOT / "configs/bench/arm1.yaml", REPO_ROOT / "configs/bench/arm2.yaml")
CACHE_VERSION = 1  # bump when the training code changes what a cached pre-trained model contains


class BudgetExceeded(Exception):
    pass


@dataclass(frozen=True)
class Context:
    profile: str
    out: Path
    cache: Path
    shared: Path
    device: torch.device
    strategies: tuple[str, ...]
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True)
class Source:
    model_name: str
    weights: Path
    num_classes: int | None  # what hmt builds the source with (None: the factory's default)
    info: Mapping[str, Any]


# ---------------------------------------------------------------------------------------- results


class Results:
    """The results folder; rewritten after every run so that any stop leaves a readable, partial result."""

    def __init__(self, out: Path, header: Mapping[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {**header, "status": "running", "sources": {}, "runs": [], "skipped": []}
        out.mkdir(parents=True, exist_ok=True)

    def add_run(self, run: Mapping[str, Any]) -> None:
        self.data["runs"].append(dict(run))
        self.flush()

    def skip(self, reason: str, **where: Any) -> None:
        self.data["skipped"].append({**where, "reason": reason})
        self.flush()

    def flush(self, wall_s: float | None = None, final: bool = False) -> None:
        if wall_s is not None:
            self.data["wall_s"] = round(wall_s, 1)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=False, default=str) + "\n", encoding="utf-8")
        tmp.replace(self.out / "results.json")
        (self.out / "results.md").write_text(render_markdown(self.data), encoding="utf-8")
        if final:
            png = self.out / "curves.png"
            if not plot_curves(self.data, png):
                png.unlink(missing_ok=True)  # never leave a previous run's picture next to these numbers


def log(ctx: Context, message: str) -> None:
    print(f"[{ctx.elapsed():7.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- setup


def _pct(acc: float | None) -> str:
    """A run's accuracy for the log; a missing one as "—", which ``pool.py`` does not read as a number."""
    return "—" if acc is None else f"{100 * acc:.1f}%"


def available_strategies() -> tuple[str, ...]:
    """Every registered hmt strategy; ``("paper",)`` for a core that predates the plug-in registry."""
    import importlib

    for module in ("hmt_cli.match", "hmt_cli.strategies"):
        try:
            return tuple(importlib.import_module(module).names())
        except (ImportError, AttributeError):
            continue
    return ("paper",)


def expand_inits(inits: Sequence[str], strategies: Sequence[str]) -> list[str]:
    out: list[str] = []
    for init in inits:
        for name in strategies if init == "strategies" else [init]:
            if name not in out:
                out.append(name)
    return out


def runtime_for(model: nn.Module, device: torch.device) -> Runtime:
    cuda = device.type == "cuda"
    # On CPU, oneDNN's channels_last path is what makes depthwise/grouped convs fast (10x for
    # efficientnet_b0's backward); for dense convs NCHW is faster. On CUDA channels_last always wins.
    grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    return Runtime(device, amp=cuda, channels_last=cuda or grouped, eval_batch=1000 if cuda else 500)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "timm": version("timm"),
        "hmt": version("hmt-cli"),
        "iatransfer": version("iatransfer"),
        "numpy": version("numpy"),
        "pillow": version("pillow"),
        "device": f"{device.type}: {name}",
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "git_commit": commit or None,
    }


# ---------------------------------------------------------------------------------------- pre-training


class CacheModified(RuntimeError):
    """A cached pre-trained checkpoint is not the file the benchmark wrote."""


def check_unchanged(path: Path, meta: Mapping[str, Any]) -> None:
    """Refuse a cached checkpoint whose bytes changed since it was trained (an analysis script that saved
    over it once cost a session its arm-1 runs: they silently used an untrained one). Entries written
    before the checksum was recorded are accepted as they are."""
    recorded = meta.get("sha256")
    if recorded is not None and sha256_file(path) != recorded:
        raise CacheModified(f"{path} changed since it was trained (sha256 differs from {path.stem}.json); "
                            "delete both files to train it again")


def pretrained(
    ctx: Context,
    arm: ArmConfig,
    model_name: str,
    kwargs: Mapping[str, Any],
    build: Any,
    deadline: float | None,
) -> tuple[Path, dict[str, Any]]:
    """Train ``build()`` with the arm's source recipe, or reuse the cached result of the same recipe."""
    spec = arm.pretrain
    assert spec is not None
    key = recipe_key(
        model=model_name,
        kwargs=dict(kwargs),
        data=spec.data,
        recipe=spec.recipe,
        img_size=arm.img_size,
        seed=0,
        version=CACHE_VERSION,
    )
    path = ctx.cache / f"pretrain-{slug(model_name)}-{key}.safetensors"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        check_unchanged(path, meta)
        log(ctx, f"{arm.arm}: reusing cached pre-trained {model_name} ({path.name})")
        return path, {**meta, "cached": True}
    log(
        ctx,
        f"{arm.arm}: pre-training {model_name} on {spec.data.dataset} classes {list(spec.data.classes)} "
        f"({spec.recipe.epochs} epochs, {arm.img_size} px)",
    )
    train_set = load_split(
        ctx.shared, spec.data, train=True, seed=0, img_size=arm.img_size, device=ctx.device
    )
    eval_set = load_split(
        ctx.shared, spec.data, train=False, seed=0, img_size=arm.img_size, device=ctx.device
    )
    torch.manual_seed(0)
    model = build()
    rt = runtime_for(model, ctx.device)
    stop = (lambda: time.perf_counter() > deadline) if deadline is not None else (lambda: False)
    epochs = spec.recipe.epochs
    result = train(
        model,
        train_set,
        spec.recipe,
        rt,
        seed=0,
        should_stop=stop,
        on_epoch=lambda e, loss: log(ctx, f"  {model_name} epoch {e}/{epochs}: train loss {loss:.3f}"),
    )
    if result.epochs_done < spec.recipe.epochs:
        raise BudgetExceeded(
            f"pre-training {model_name} cut at epoch {result.epochs_done}/{spec.recipe.epochs}"
        )
    info = {
        "model": model_name,
        "origin": f"trained by the benchmark: {len(train_set)} images, {spec.recipe.epochs} epochs, "
        f"{arm.img_size} px",
        "acc_eval": accuracy(model, eval_set, rt),
        "n_eval": len(eval_set),
        "train_s": result.train_s,
        "final_train_loss": result.final_train_loss,
        "recipe_key": key,
        "trained_on": str(ctx.device),
    }
    save_state(model.cpu(), path, info)
    info["sha256"] = sha256_file(path)  # checked on every reuse: see check_unchanged
    meta_path.write_text(json.dumps(info, indent=1) + "\n")
    log(
        ctx,
        f"{arm.arm}: {model_name} pre-trained in {result.train_s:.0f}s, acc {100 * info['acc_eval']:.1f}%",
    )
    return path, {**info, "cached": False}


def prepare_source(ctx: Context, arm: ArmConfig) -> Source:
    spec = arm.source
    if spec.weights is None:
        assert arm.pretrain is not None, f"{arm.arm}: a source without weights needs a `pretrain` recipe"
        classes = arm.pretrain.data.num_classes
        path, info = pretrained(ctx, arm, spec.model, spec.kwargs, lambda: build_source(spec, classes), None)
        return Source(spec.model, path, classes, info)
    path = Path(spec.weights)
    path = path if path.is_absolute() else ctx.shared / path
    if not path.exists():
        raise FileNotFoundError(f"{arm.arm}: source weights {path} not found (set --shared or HMT_SHARED)")
    info: dict[str, Any] = {"model": spec.model, "origin": f"checkpoint {path.name}"}
    if spec.eval_data is not None:
        model = build_source(spec)
        model.load_state_dict(load_state(path), strict=True)
        data = load_split(
            ctx.shared, spec.eval_data, train=False, seed=0, img_size=arm.img_size, device=ctx.device
        )
        info |= {
            "acc_eval": accuracy(model.to(ctx.device), data, runtime_for(model, ctx.device)),
            "n_eval": len(data),
        }
    return Source(spec.model, path, None, info)


# ---------------------------------------------------------------------------------------- one run


class Runner:
    """Runs every (seed, dataset, target, init) of one arm within its deadline."""

    def __init__(
        self, ctx: Context, arm: ArmConfig, source: Source | None, results: Results, deadline: float
    ) -> None:
        self._src, self.ctx, self.arm, self.results, self.deadline = source, ctx, arm, results, deadline
        self.inits = expand_inits(arm.inits, ctx.strategies)
        self._data: dict[tuple[str, bool, int], ImageSet] = {}
        self._heads: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}
        self._durations: dict[tuple[str, str, str], float] = {}
        self._source_model: nn.Module | None = None
        self._upper: dict[str, Path] = {}
        self._pretrain_s = 0.0
        # The control's random-init source: per process (shards must not race on one file), removed at exit.
        self._untrained: tuple[tempfile.TemporaryDirectory, Path] | None = None

    def data(self, ds: DataSpec, train: bool, seed: int) -> ImageSet:
        key = (ds.name, train, seed if train else 0)
        if key not in self._data:
            self._data[key] = load_split(
                self.ctx.shared,
                ds,
                train=train,
                seed=key[2],
                img_size=self.arm.img_size,
                device=self.ctx.device,
            )
        return self._data[key]

    def head(self, target: TargetSpec, num_classes: int, seed: int) -> dict[str, torch.Tensor]:
        key = (target.name, num_classes, seed)
        if key not in self._heads:
            self._heads[key] = head_state(create_target(target, num_classes, seed))
        return self._heads[key]

    @property
    def source(self) -> Source:
        if self._src is None:  # only scratch/upper runs are planned without a source
            raise RuntimeError(f"{self.arm.arm}: this run needs the source, which was not prepared")
        return self._src

    def source_model(self) -> nn.Module:
        if self._source_model is None:
            model = build_source(self.arm.source, self.source.num_classes)
            model.load_state_dict(load_state(self.source.weights), strict=True)
            self._source_model = model.eval()
        return self._source_model

    def make_init(self, init: str, target: TargetSpec, num_classes: int, seed: int) -> InitResult:
        if init == "scratch":
            return InitResult(create_target(target, num_classes, seed), 0.0, {}, 0.0)
        if init == "dpiat":
            return dpiat_init(self.source_model(), target, num_classes, seed)
        if init == "upper":
            return upper_init(self.upper_weights(target), target, num_classes, seed)
        strategy, control = split_control(init)
        return hmt_init(
            source=self.arm.source,
            source_weights=self.untrained_weights() if control else self.source.weights,
            source_classes=self.source.num_classes,
            target=target,
            num_classes=num_classes,
            strategy=strategy,
            seed=seed,
        )

    def untrained_weights(self) -> Path:
        if self._untrained is None:
            folder = tempfile.TemporaryDirectory(prefix="hmt-quality-")
            path = Path(folder.name) / f"untrained-{slug(self.arm.source.model)}.safetensors"
            self._untrained = folder, untrained_source(self.arm.source, self.source.num_classes, path)
        return self._untrained[1]

    def upper_weights(self, target: TargetSpec) -> Path:
        if target.name not in self._upper:
            assert self.arm.pretrain is not None
            classes = self.arm.pretrain.data.num_classes
            t0 = time.perf_counter()
            path, info = pretrained(
                self.ctx,
                self.arm,
                target.name,
                target.kwargs,
                lambda: create_target(target, classes, 0),
                self.deadline,
            )
            self._pretrain_s += time.perf_counter() - t0
            self.results.data["sources"].setdefault(f"{self.arm.arm}/upper", {})[target.name] = info
            self._upper[target.name] = path
        return self._upper[target.name]

    def estimate(self, ds: DataSpec, target: TargetSpec, init: str) -> float:
        exact = self._durations.get((ds.name, target.name, init))
        if exact is not None:
            return exact
        similar = [d for (n, t, _), d in self._durations.items() if n == ds.name and t == target.name]
        return max(similar) if similar else 0.0

    def run_all(self) -> None:
        everything_else = [i for i in self.inits if i != "upper"]
        for seed in self.arm.seeds:  # seeds outermost: a budget cut still leaves every target a seed
            for ds in self.arm.datasets:
                for target in self.arm.targets:
                    for init in everything_else:
                        self.run_guarded(ds, target, init, seed)
        if "upper" not in self.inits:
            return
        # Upper runs go last: the most expensive (each pre-trains its target) and the least essential, so a
        # budget cut drops them before any transfer-vs-scratch comparison. Targets in `upper_targets` order
        # (the priority), all seeds of one target together so its pre-training is paid once.
        for target in self.upper_order():
            for seed in self.arm.seeds:
                for ds in self.arm.datasets:
                    self.run_guarded(ds, target, "upper", seed)

    def upper_order(self) -> list[TargetSpec]:
        targets = [t for t in self.arm.targets if self.arm.has_upper(t.name)]
        priority = list(self.arm.upper_targets or ())
        return sorted(targets, key=lambda t: priority.index(t.name) if t.name in priority else len(priority))

    def run_guarded(self, ds: DataSpec, target: TargetSpec, init: str, seed: int) -> None:
        where = {"arm": self.arm.arm, "dataset": ds.name, "target": target.name, "init": init, "seed": seed}
        if time.perf_counter() + self.estimate(ds, target, init) > self.deadline:
            self.results.skip("budget: would not finish within --budget-min", **where)
            return
        try:
            run = self.run_one(ds, target, init, seed)
        except BudgetExceeded as exc:
            self.results.skip(f"budget: {exc}", **where)
            return
        except Exception as exc:  # one failing init must not cost the other runs their results
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if os.environ.get("HMT_DEBUG"):
                traceback.print_exc()
            log(self.ctx, f"  skipped {where}: {reason}")
            self.results.skip(reason, **where)
            return
        self.results.add_run(run)

    def run_one(self, ds: DataSpec, target: TargetSpec, init: str, seed: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        built = self.make_init(init, target, ds.num_classes, seed)
        pretrain_s = self._pretrain_s  # an upper init may pre-train its target first: not a per-run cost
        set_head(built.model, self.head(target, ds.num_classes, seed))
        init_s = time.perf_counter() - t0
        train_set, eval_set = self.data(ds, True, seed), self.data(ds, False, seed)
        rt = runtime_for(built.model, self.ctx.device)
        result = train(built.model, train_set, self.arm.finetune, rt, seed=seed, eval_data=eval_set)
        early = self.arm.finetune.early_epoch
        run = {
            "arm": self.arm.arm,
            "dataset": ds.name,
            "target": target.name,
            "init": init,
            "seed": seed,
            "acc_final": result.acc_at(result.epochs_done),
            "acc_early": result.acc_at(early),
            "early_epoch": early,
            "epochs": result.epochs_done,
            "frac_params_written": built.frac_params_written,
            "frac_params_from_source": built.frac_params_from_source,
            "curve": [[e, round(a, 5)] for e, a in result.curve],
            "init_s": round(init_s, 2),
            "train_s": result.train_s,
            "eval_s": result.eval_s,
            "final_train_loss": round(result.final_train_loss, 5),
            "n_train": len(train_set),
            "n_eval": len(eval_set),
            "img_size": self.arm.img_size,
            "channels_last": rt.channels_last,
            "details": dict(built.details),
        }
        self._durations[(ds.name, target.name, init)] = (
            time.perf_counter() - t0 - (self._pretrain_s - pretrain_s)
        )
        log(
            self.ctx,
            f"{self.arm.arm} {ds.name} {target.name} {init} seed {seed}: final "
            f"{_pct(run['acc_final'])} early {_pct(run['acc_early'])} "
            f"(init {init_s:.1f}s, train {result.train_s:.1f}s, eval {result.eval_s:.1f}s)",
        )
        return run


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", choices=PROFILES, default="quick")
    p.add_argument(
        "--config", action="append", type=Path, help="arm config(s); default configs/bench/arm{1,2}.yaml"
    )
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/quality-<profile>)")
    p.add_argument("--cache", type=Path, help="pre-trained model cache (default <out>/cache)")
    p.add_argument("--shared", help="data/weights dir (default $HMT_SHARED, else ../shared next to the repo)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads (default: the CPUs this process may use)")
    p.add_argument(
        "--budget-min", type=float, help="total wall-clock budget; default: the profile's, per arm"
    )
    p.add_argument("--strategies", help="comma-separated hmt strategies (default: every registered one)")
    p.add_argument(
        "--strategy-module", action="append", metavar="MODULE",
        help="import MODULE first; it registers experimental strategies for this run (benchmarks/variants/)",
    )
    p.add_argument(
        "--targets", help="comma-separated targets, replacing the profile's (kwargs from the config)"
    )
    p.add_argument("--datasets", help="comma-separated datasets of the arm(s), replacing the profile's")
    p.add_argument(
        "--eval-every", type=int,
        help="accuracy curve every N epochs instead of the profile's (the early and final epochs are always "
        "evaluated): on a GPU, evaluating 5,000-10,000 images after every epoch is ~40%% of a run",
    )
    p.add_argument("--seeds", type=int, help="use seeds 0..N-1 instead of the profile's")
    p.add_argument("--inits", help="comma-separated inits, replacing the profile's (e.g. scratch,strategies)")
    p.add_argument("--upper-targets", help="comma-separated targets that get an `upper` run, replacing the config's")
    p.add_argument(
        "--workers", type=int, default=1,
        help="run (arm, dataset, target) shards in this many parallel processes sharing the device; "
        "one wall-clock budget for all (default 1: everything in this process)",
    )
    p.add_argument("--render", type=Path, metavar="DIR", help="only re-render results.md/curves.png of DIR")
    return p.parse_args(argv)


def _override_arm(arm: ArmConfig, args: argparse.Namespace) -> ArmConfig:
    from dataclasses import replace

    if args.targets:
        known = {t.name: t for t in arm.targets}
        arm = replace(arm, targets=tuple(known.get(n, TargetSpec(n, {})) for n in args.targets.split(",")))
    if args.datasets:
        wanted = args.datasets.split(",")
        arm = replace(arm, datasets=tuple(d for d in arm.datasets if d.name in wanted))
    if args.seeds:
        arm = replace(arm, seeds=tuple(range(args.seeds)))
    if args.eval_every:
        arm = replace(arm, finetune=replace(arm.finetune, eval_every=args.eval_every))
    if args.inits:
        arm = replace(arm, inits=tuple(args.inits.split(",")))
    if args.upper_targets:
        arm = replace(arm, upper_targets=tuple(args.upper_targets.split(",")))
    return arm


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def render(folder: Path) -> int:
    data = json.loads((folder / "results.json").read_text())
    (folder / "results.md").write_text(render_markdown(data), encoding="utf-8")
    plot_curves(data, folder / "curves.png")
    return 0


def run_sharded(
    ctx: Context, arms: Sequence[ArmConfig], configs: Sequence[Path], args: argparse.Namespace,
    results: Results, deadline: float,
) -> str:
    """Every (arm, dataset, target) in its own ``quality.py`` process, ``--workers`` at a time, one deadline
    for all; sources the benchmark pre-trains are trained here first (see benchmarks/_quality_shards.py)."""
    state = {a.arm: "ready" if a.source.weights is not None else "wait" for a in arms}
    threads = worker_threads(args.workers)

    def argv_for(shard: Any) -> list[str]:
        budget = max((deadline - time.perf_counter()) / 60, 0.05)
        return shard_argv(shard, args, ctx.out, ctx.cache, ctx.shared, budget, threads)

    def train_sources() -> None:  # overlaps the shards of arms whose source is a checkpoint
        for arm in arms:
            if state[arm.arm] != "wait":
                continue
            try:
                results.data["sources"][arm.arm] = dict(prepare_source(ctx, arm).info)
                state[arm.arm] = "ready"
            except Exception as exc:  # its shards are dropped; the other arms' results still count
                log(ctx, f"{arm.arm}: source failed: {type(exc).__name__}: {exc}")
                results.skip(f"source failed: {type(exc).__name__}: {exc}", arm=arm.arm)
                state[arm.arm] = "drop"

    shards = plan_shards(arms, configs)
    log(ctx, f"{len(shards)} shards, {args.workers} at a time, {threads} CPU threads each")
    try:
        def readiness(shard: Any) -> str:
            return state[shard.arm] if shard.needs_source else "ready"

        results.data["shards"] = run_shards(shards, argv_for, readiness, args.workers, deadline,
                                            ctx.out / "shards", lambda m: log(ctx, m), between=train_sources)
    finally:  # interrupted too: what the shards finished (each flushes after every run) still counts
        status = merge_shard_results(results.data, [ctx.out / "shards" / s.name for s in shards])
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        return render(args.render)
    device = _device(args.device)
    if device.type == "cpu" or args.threads:  # on a GPU too when given: shards split the cores between them
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    else:
        torch.backends.cudnn.benchmark = True  # GPU runs are not bit-deterministic anyway
    configs = [path.resolve() for path in (args.config or DEFAULT_CONFIGS)]
    arms = [_override_arm(load_arm(path, args.profile), args) for path in configs]
    out = args.out or REPO_ROOT / "benchmarks" / "results" / f"quality-{args.profile}"
    cache = args.cache or out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("*\n")  # checkpoints are re-creatable and large: never committed
    for module in args.strategy_module or ():  # before the registry is read: they append to it
        importlib.import_module(module)
    strategies = tuple(args.strategies.split(",")) if args.strategies else available_strategies()
    ctx = Context(args.profile, out, cache, resolve_shared(args.shared), device, strategies)
    planned = sum(a.budget_min for a in arms)
    scale = (args.budget_min / planned) if args.budget_min else 1.0
    results = Results(
        out,
        {
            "benchmark": "hmt quality (issue 4)",
            "schema": 1,
            "profile": args.profile,
            "command": " ".join(["python", "benchmarks/quality.py", *(argv if argv is not None else sys.argv[1:])]),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": {
                "profile": args.profile,
                "budget_min": round(planned * scale, 2),
                "device": str(device),
                "strategies": list(strategies),
                "shared": str(ctx.shared),
                "arms": {
                    a.arm: {
                        **a.resolved,
                        "drops": a.drops,
                        "inits_expanded": expand_inits(a.inits, strategies),
                    }
                    for a in arms
                },
            },
            "environment": environment(device),
        },
    )
    signal.signal(signal.SIGTERM, _raise_interrupt)
    status = "complete"
    deadline = ctx.started
    try:
        if args.workers > 1:
            status = run_sharded(ctx, arms, configs, args, results, ctx.started + 60 * planned * scale)
        else:
            for arm in arms:
                deadline += 60 * arm.budget_min * scale  # time an arm leaves unused goes to the next one
                log(ctx, f"{arm.arm} ({args.profile}): {arm.description}")
                # An `upper`-only shard must not pre-train the source the parent is training beside it.
                try:
                    source = prepare_source(ctx, arm) if needs_source(arm.inits) else None
                except CacheModified as exc:  # the other arms' results still count
                    log(ctx, f"{arm.arm}: source failed: {exc}")
                    results.skip(f"source failed: {type(exc).__name__}: {exc}", arm=arm.arm)
                    continue
                if source is not None:
                    results.data["sources"][arm.arm] = dict(source.info)
                Runner(ctx, arm, source, results, deadline).run_all()
        if status == "complete" and any(s["reason"].startswith("budget") for s in results.data["skipped"]):
            status = "partial"
    except KeyboardInterrupt:
        status = "interrupted"
        log(ctx, "interrupted: writing partial results")
    finally:
        results.data["status"] = status
        results.flush(wall_s=ctx.elapsed(), final=True)
    log(ctx, f"done ({status}) in {ctx.elapsed() / 60:.1f} min -> {out}/results.md")
    return 130 if status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())

"""Turn the ``runs`` of a quality benchmark into ``results.md`` tables and ``curves.png``.

Pure functions of the results dict, so a results.json can be re-rendered without re-running anything
(``python benchmarks/quality.py --render DIR``).
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Group", "summarize", "render_markdown", "plot_curves"]

_INIT_ORDER = ("scratch", "paper")  # then the other strategies, then dpiat, then upper


@dataclass(frozen=True)
class Group:
    """Every seed of one (arm, dataset, target, init)."""

    arm: str
    dataset: str
    target: str
    init: str
    n: int
    final_mean: float
    final_std: float | None
    early_mean: float | None
    early_std: float | None
    frac_written: float | None
    frac_source: float | None = None  # of the parameters, the fraction holding source values
    gain: float | None = None  # mean over paired seeds of final - scratch's final (fraction)
    recovery: float | None = None  # gain / (upper - scratch), each paired by seed
    gain_seeds: int = 0  # seeds the gain is paired over: fewer than n when a budget cut left scratch short


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def _init_rank(init: str) -> tuple[int, str]:
    if init in _INIT_ORDER:
        return _INIT_ORDER.index(init), init
    return {"dpiat": 8, "upper": 9}.get(init, 5), init


def _paired_diff(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> tuple[float | None, int]:
    """Mean of a's final accuracy minus b's over the seeds both have, and how many that is.

    Paired, not a difference of means: a run cut by its budget can leave one init with seeds another
    lacks, and seed-to-seed spread (several points on these few-shot tasks) would then pass for a gain.
    With every seed present the two are the same number."""
    fa = {r["seed"]: r["acc_final"] for r in a if r.get("acc_final") is not None}
    fb = {r["seed"]: r["acc_final"] for r in b if r.get("acc_final") is not None}
    common = sorted(fa.keys() & fb.keys())
    if not common:
        return None, 0
    return statistics.fmean(fa[s] - fb[s] for s in common), len(common)


def summarize(runs: Iterable[Mapping[str, Any]]) -> list[Group]:
    buckets: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        buckets[(run["arm"], run["dataset"], run["target"], run["init"])].append(run)
    base: dict[tuple[str, str, str, str], Group] = {}
    for key, rows in buckets.items():
        final_mean, final_std = _mean_std([r["acc_final"] for r in rows])
        early_mean, early_std = _mean_std([r.get("acc_early") for r in rows])
        frac, _ = _mean_std([r.get("frac_params_written") for r in rows])
        source, _ = _mean_std([r.get("frac_params_from_source") for r in rows])  # absent in older results
        base[key] = Group(*key, len(rows), final_mean or 0.0, final_std, early_mean, early_std, frac, source)
    out = []
    for (arm, ds, tgt, init), g in base.items():
        scratch = buckets.get((arm, ds, tgt, "scratch"), [])
        upper = buckets.get((arm, ds, tgt, "upper"), [])
        gain, paired = _paired_diff(buckets[(arm, ds, tgt, init)], scratch)
        headroom, _ = _paired_diff(upper, scratch)
        recovery = gain / headroom if gain is not None and headroom and headroom > 0 else None
        out.append(Group(**{**g.__dict__, "gain": gain, "recovery": recovery, "gain_seeds": paired}))
    return sorted(out, key=lambda g: (g.arm, g.dataset, g.target, _init_rank(g.init)))


def _pct(mean: float | None, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if std is not None else f"{100 * mean:.1f}"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:+.1f}"


def _detail_table(groups: Sequence[Group], early_epoch: Any) -> list[str]:
    lines = [
        f"| target | init | seeds | final acc % | early acc % (epoch {early_epoch}) | gain vs scratch (pts) "
        "| recovery | params written | source values |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        recovery = "—" if g.recovery is None else f"{g.recovery:.2f}"
        written, source = (
            "—" if frac is None else f"{100 * frac:.1f}%" for frac in (g.frac_written, g.frac_source)
        )
        gain = _signed(g.gain if g.init != "scratch" else None)
        if g.init != "scratch" and g.gain is not None and g.gain_seeds < g.n:
            gain += f" ({g.gain_seeds} paired)"  # a budget cut left scratch without some of these seeds
        lines.append(
            f"| {g.target} | {g.init} | {g.n} | {_pct(g.final_mean, g.final_std)} | "
            f"{_pct(g.early_mean, g.early_std)} | {gain} | {recovery} | {written} | {source} |"
        )
    return lines


def _pivot_table(groups: Sequence[Group]) -> list[str]:
    """Target x init final accuracy, plus the mean gain over scratch per init (issue 5's yardstick)."""
    inits = sorted({g.init for g in groups}, key=_init_rank)
    targets = sorted({g.target for g in groups})
    cell = {(g.target, g.init): g for g in groups}
    lines = ["| target | " + " | ".join(inits) + " |", "|---" * (len(inits) + 1) + "|"]
    for t in targets:
        row = [
            _pct(cell[(t, i)].final_mean, cell[(t, i)].final_std) if (t, i) in cell else "—" for i in inits
        ]
        lines.append(f"| {t} | " + " | ".join(row) + " |")
    gains = []
    for i in inits:
        vals = [cell[(t, i)].gain for t in targets if (t, i) in cell and cell[(t, i)].gain is not None]
        gains.append(_signed(statistics.fmean(vals)) if vals and i != "scratch" else "—")
    lines.append("| *mean gain vs scratch (pts)* | " + " | ".join(gains) + " |")
    return lines


def render_markdown(results: Mapping[str, Any]) -> str:
    groups = summarize(results.get("runs", []))
    env = results.get("environment", {})
    cfg = results.get("config", {})
    lines = [
        f"# hmt quality benchmark — profile `{results.get('profile')}`",
        "",
        f"Status: **{results.get('status')}** · wall time {results.get('wall_s', 0) / 60:.1f} min · "
        f"device {env.get('device')} · torch {env.get('torch')} · timm {env.get('timm')} · "
        f"hmt {env.get('hmt')}",
        "",
        *([f"Command: `{results['command']}`", ""] if results.get("command") else []),
        "Accuracies are top-1 in % (mean ± sample std over seeds). *gain* = final accuracy minus scratch's, "
        "paired by seed (over the seeds both finished; '(k paired)' when that is fewer than the init's), "
        "*recovery* = (init - scratch) / (upper - scratch), *params written* = fraction of the target's "
        "parameters the init wrote (hmt: `TransferReport.frac_params_written`; dpiat: elements it changed; "
        "upper: everything but the head), *source values* = the fraction of them that holds the source's "
        "values (below *params written* where a narrower source sits inside the target's init, as hmt's "
        "centre rule pads it; '—' in results from before it was recorded).",
    ]
    for arm, arm_cfg in cfg.get("arms", {}).items():
        lines += ["", f"## {arm}: {arm_cfg.get('description', '')}", ""]
        lines.append(f"Profile drops: {arm_cfg.get('drops', '—')}")
        src = results.get("sources", {}).get(arm)
        if src:
            acc = src.get("acc_eval")
            acc_txt = f", accuracy on its own task's test images {_pct(acc)}%" if acc is not None else ""
            if src.get("cached"):  # the wall time above then excludes the source's training
                acc_txt += f"; reused from the cache, trained in {src.get('train_s', 0):.0f} s earlier"
            lines += ["", f"Source: `{src.get('model')}` ({src.get('origin')}{acc_txt})."]
        arm_groups = [g for g in groups if g.arm == arm]
        for ds in sorted({g.dataset for g in arm_groups}):
            ds_groups = [g for g in arm_groups if g.dataset == ds]
            early = arm_cfg.get("finetune", {}).get("early_epoch")
            lines += ["", f"### {arm} · {ds}", "", "Final accuracy %:", ""]
            lines += _pivot_table(ds_groups)
            lines += ["", "Per init:", ""]
            lines += _detail_table(ds_groups, early)
    skipped = results.get("skipped", [])
    if skipped:
        lines += [
            "",
            "## Skipped",
            "",
            "| arm | dataset | target | init | seed | reason |",
            "|---|---|---|---|---|---|",
        ]
        for s in skipped:
            lines.append(
                f"| {s.get('arm')} | {s.get('dataset', '—')} | {s.get('target', '—')} | {s.get('init', '—')} "
                f"| {s.get('seed', '—')} | {s.get('reason', '')} |"
            )
    return "\n".join(lines) + "\n"


def plot_curves(results: Mapping[str, Any], path: Path) -> bool:
    """Accuracy vs epoch, mean over seeds, one panel per (arm, dataset, target); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed (the `bench` extra): curves.png skipped", stacklevel=2)
        return False
    panels: dict[tuple[str, str, str], dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for run in results.get("runs", []):
        for epoch, acc in run.get("curve", []):
            panels[(run["arm"], run["dataset"], run["target"])][run["init"]][int(epoch)].append(acc)
    if not panels:
        return False
    keys = sorted(panels)
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        for init in sorted(panels[key], key=_init_rank):
            points = sorted(panels[key][init].items())
            ax.plot(
                [e for e, _ in points], [100 * statistics.fmean(v) for _, v in points], marker=".", label=init
            )
        ax.set_title(" · ".join(key), fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("top-1 %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(
        f"hmt quality benchmark ({results.get('profile')}): accuracy vs fine-tuning epoch", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

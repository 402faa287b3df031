"""Scale gap: how much ``block-initscale`` (or ``--strategy``) rescales ``block``'s tensors, per target, for one source.

    python benchmarks/scale_gap.py --src resnet18 --src-weights CACHE/pretrain-resnet18-<key>.safetensors \\
        --num-classes 5 --label arm1                       # arm 1's trained source (quality.py's cache)
    python benchmarks/scale_gap.py --src benchmarks.cifar_resnet:resnet56 \\
        --src-weights ../shared/weights/resnet56-4bfd9763.th --num-classes 10 --label arm2

``block-initscale`` is ``block`` with each written weight behind a BatchNorm scaled up to the target init's
std (docs/transfer.md). In training mode both compute the same function, so where the factors are all ~1
the two strategies are the same start and any difference between their fine-tuning runs is seed-to-seed
chaos; only where the gap is large can the effective learning rate differ. Both transfers go through
:func:`hmt_cli.pipeline.transfer`; a weight's factor is the std of its ``block-initscale`` tensor over the std
of its ``block`` one. Writes ``benchmarks/results/scale-gap-<label>.{json,md}``.

That factor is measured over the whole tensor. Where ``block`` writes a narrow source into a wider layer
(centre crop/pad), only a slice of the tensor holds source values and the rest keeps the target's init,
which then dominates the std: the factor says little about the source's own scale. So a second table
measures, per lifted weight, the fraction of its elements that hold source values (those differing from
the target's seed-0 init) and the gap of that slice alone: the init's std over the slice's std.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = ("mobilenetv3_large_100", "efficientnet_b0", "resnet50", "regnety_016", "convnext_atto")
CHANGED = 1.01  # a factor above this counts as a change (below it, float noise and 1% nudges)


def factors(src: str, weights: Path, tgt: str, num_classes: int, tmp: Path, strategy: str = "block-initscale"
            ) -> list[tuple[str, float, int]]:
    """(weight key, factor over ``block``, numel) for every conv/linear weight ``block`` writes into ``tgt``."""
    from safetensors.torch import load_file

    from hmt_cli.options import TransferOptions
    from hmt_cli.pipeline import transfer

    out: dict[str, dict] = {}
    for name in ("block", strategy):
        path = tmp / f"{name}.safetensors"
        report = transfer(TransferOptions(src=src, tgt=tgt, out=path, src_weights=weights, num_classes=num_classes,
                                          strategy=name, force=True, device="cpu"))
        written = {r["key"] for r in report.tensors if r["status"] == "transferred"}
        out[name] = {k: v for k, v in load_file(path).items() if k in written}
    rows = []
    for key, base in out["block"].items():
        if base.ndim < 2 or not key.endswith("weight"):
            continue  # norms and biases: the bias follows its weight's factor
        std = float(base.float().std())
        rows.append((key, float(out[strategy][key].float().std()) / std if std > 0 else 1.0, base.numel()))
    return rows


def written_gaps(src: str, weights: Path, tgt: str, num_classes: int, tmp: Path, block_file: Path | None = None
                 ) -> list[tuple[str, float, float, int]]:
    """(weight key, fraction of its elements holding source values, init std / std of those, numel) for
    every weight ``block-initscale`` lifts (those behind a BatchNorm), from ``block``'s transfer at seed 0
    (``block_file``: that transfer's output when the caller already ran it, as :func:`factors` does)."""
    import torch
    from safetensors.torch import load_file

    from hmt_cli.models import build_model, resolve_model
    from hmt_cli.options import TransferOptions
    from hmt_cli.pipeline import transfer

    def run(strategy: str, dry_run: bool) -> Any:
        return transfer(TransferOptions(src=src, tgt=tgt, out=None if dry_run else tmp / "block.safetensors",
                                        src_weights=weights, num_classes=num_classes, strategy=strategy,
                                        force=True, device="cpu", dry_run=dry_run))

    lifted = [r["key"] for r in run("block-initscale", True).tensors if r.get("scale") == "init_std_up"]
    if block_file is None:
        run("block", False)
    out = load_file(block_file or tmp / "block.safetensors")
    torch.manual_seed(0)  # the transfer's --seed 0: the init it wrote into
    init = build_model(resolve_model(tgt), device="cpu", num_classes=num_classes).state_dict()
    rows = []
    for key in lifted:
        mask = out[key] != init[key]
        part = out[key][mask].float()
        gap = float(init[key].float().std()) / float(part.std()) if part.numel() > 1 and part.std() > 0 else 1.0
        rows.append((key, float(mask.float().mean()), gap, out[key].numel()))
    return rows


def written_summary(tgt: str, rows: list[tuple[str, float, float, int]]) -> dict[str, Any]:
    gaps = sorted(g for _, _, g, _ in rows)
    if not gaps:
        return {"target": tgt, "weights": 0, "partial": 0, "frac_written": 1.0, "median": 1.0, "p90": 1.0,
                "max": 1.0, "over_4x": 0}
    return {
        "target": tgt, "weights": len(rows), "partial": sum(f < 0.99 for _, f, _, _ in rows),
        "frac_written": statistics.median(f for _, f, _, _ in rows),
        "median": statistics.median(gaps), "p90": gaps[int(0.9 * (len(gaps) - 1))], "max": gaps[-1],
        "over_4x": sum(g > 4 for g in gaps),
    }


def written_table(rows: list[dict[str, Any]]) -> str:
    lines = ["Source-written slices of the lifted weights (`block`'s tensors at seed 0): the init's std over "
             "the std of the elements holding source values", "",
             "| target | lifted weights | partly written (<99%) | median fraction written | median gap | p90 | max "
             "| >4x |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['weights']} | {r['partial']} | {r['frac_written']:.0%} | {r['median']:.2f} | "
              f"{r['p90']:.2f} | {r['max']:.2f} | {r['over_4x']} |" for r in rows]
    return "\n".join(lines) + "\n"


def summary(tgt: str, rows: list[tuple[str, float, int]]) -> dict[str, Any]:
    changed = sorted(f for _, f, _ in rows if f > CHANGED)
    numel = sum(n for *_, n in rows)
    return {
        "target": tgt, "weights": len(rows), "changed": len(changed),
        "changed_params": sum(n for _, f, n in rows if f > CHANGED) / numel if numel else 0.0,
        "median": statistics.median(changed) if changed else 1.0,
        "p90": changed[int(0.9 * (len(changed) - 1))] if changed else 1.0,
        "max": changed[-1] if changed else 1.0,
        "over_4x": sum(f > 4 for f in changed),
        "largest": sorted(((f, k) for k, f, _ in rows), reverse=True)[:3],
    }


def table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"# {title}", "",
             "| target | written weights | scaled (>1.01x) | params in scaled weights | median | p90 | max | >4x |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['weights']} | {r['changed']} | {r['changed_params']:.0%} | {r['median']:.2f} | "
              f"{r['p90']:.2f} | {r['max']:.2f} | {r['over_4x']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True)
    p.add_argument("--src-weights", type=Path, required=True)
    p.add_argument("--num-classes", type=int, required=True, help="the targets' classes (the run's dataset)")
    p.add_argument("--targets", default=",".join(TARGETS))
    p.add_argument("--strategy", default="block-initscale", help="compared with block (default block-initscale)")
    p.add_argument("--strategy-module", help="import it first: it registers experimental strategies (variants)")
    p.add_argument("--label", required=True, help="results go to scale-gap-<label>.{json,md}")
    args = p.parse_args(argv)
    import importlib

    import torch

    if args.strategy_module:
        importlib.import_module(args.strategy_module)
    torch.set_num_threads(1)  # seconds per target; leave the other cores to whatever runs beside it
    results, slices = [], []
    with tempfile.TemporaryDirectory(prefix="hmt-scale-gap-") as tmp:
        for tgt in args.targets.split(","):
            rows = factors(args.src, args.src_weights, tgt, args.num_classes, Path(tmp), args.strategy)
            results.append(summary(tgt, rows))
            block_file = Path(tmp) / "block.safetensors"  # what factors() just wrote for this target
            slices.append(written_summary(tgt, written_gaps(args.src, args.src_weights, tgt, args.num_classes,
                                                             Path(tmp), block_file)))
    title = f"{args.strategy} over block: weight std factors, source {args.src} ({args.src_weights.name})"
    md = table(results, title) + "\n" + written_table(slices)
    print(md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scale-gap-{args.label}.md").write_text(md)
    (RESULTS / f"scale-gap-{args.label}.json").write_text(json.dumps(
        {"src": args.src, "src_weights": str(args.src_weights), "strategy": args.strategy, "threshold": CHANGED,
         "targets": results, "written": slices}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

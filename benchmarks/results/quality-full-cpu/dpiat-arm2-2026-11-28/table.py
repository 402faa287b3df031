"""Arm-2 rows on the 2-core CPU at protocol settings, one init against another, paired by seed.

    python benchmarks/results/quality-full-cpu/dpiat-arm2-2026-11-28/table.py A B [--seeds 0,1,2] [--only FOLDER]
        [--machine TEXT] [--skip FOLDER ...]

Reads every ``results.json`` under ``benchmarks/results/quality-full-cpu/`` (arm 2, 30 epochs, 32 px,
1,000 shots). Runs of hmt strategies count only from the folders run with today's plans (``PLAN_FOLDERS``:
earlier folders ran older versions of the same names); scratch and DPIAT hold no hmt code and count from
every folder. A run recorded twice with different accuracies is printed as a CONFLICT (a run on this machine
is expected to reproduce exactly; it does not across CPUs, see README.md). ``--only FOLDER``: read only that
folder of ``quality-full-cpu/``; ``--machine TEXT``: only runs whose recorded device contains TEXT (e.g.
``AMD``); ``--skip FOLDER``: leave that folder out (two machines can report the same CPU name: this
folder's 2026-12-06 runs and the earlier ones are both "AMD EPYC" and differ). Prints mean ± standard
error of A - B, and on how many seeds A is ahead.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAN_FOLDERS = ("isolate-2026-11-28", "auto-2026-11-28", "dpiat-arm2-2026-11-28")
NO_HMT = ("scratch", "dpiat")


def collect(only: str | None, machine: str | None, skip: list[str]) -> dict[tuple[str, str, str], dict[int, float]]:
    acc: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    for path in sorted((ROOT / only if only else ROOT).glob("**/results.json")):
        folder = path.relative_to(ROOT).parts[0]
        if folder in skip:
            continue
        result = json.loads(path.read_text())
        if machine and machine not in result["environment"].get("device", ""):
            continue
        for run in result["runs"]:
            if (run["arm"], run["epochs"], run["img_size"], run.get("n_train")) != ("arm2", 30, 32, 1000):
                continue
            if run["init"] not in NO_HMT and folder not in PLAN_FOLDERS:
                continue
            key, seed = (run["dataset"], run["target"], run["init"]), run["seed"]
            old = acc[key].get(seed)
            if old is not None and old != run["acc_final"]:
                print(f"CONFLICT {key} seed {seed}: {old} vs {run['acc_final']} ({path.relative_to(ROOT)})")
            acc[key][seed] = run["acc_final"]
    return acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--seeds", help="comma-separated seeds (default: every seed both have)")
    p.add_argument("--only", metavar="FOLDER", help="only this folder of quality-full-cpu/")
    p.add_argument("--machine", metavar="TEXT", help="only runs whose recorded device contains TEXT")
    p.add_argument("--skip", metavar="FOLDER", action="append", default=[], help="leave this folder out")
    args = p.parse_args()
    wanted = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    acc = collect(args.only, args.machine, args.skip)
    print(f"| row | seeds | {args.a} | {args.b} | {args.a} - {args.b} |")
    print("|---|---|---|---|---|")
    for ds, tgt in sorted({(k[0], k[1]) for k in acc}):
        a, b = acc.get((ds, tgt, args.a), {}), acc.get((ds, tgt, args.b), {})
        seeds = sorted(s for s in set(a) & set(b) if wanted is None or s in wanted)
        if not seeds:
            continue
        diffs = [100 * (a[s] - b[s]) for s in seeds]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        mean_a = statistics.mean(100 * a[s] for s in seeds)
        mean_b = statistics.mean(100 * b[s] for s in seeds)
        print(f"| {ds} · {tgt} | {','.join(map(str, seeds))} | {mean_a:.1f} | {mean_b:.1f} | "
              f"{statistics.mean(diffs):+.1f} ± {se:.1f} ({sum(d > 0 for d in diffs)}/{len(diffs)}) |")


if __name__ == "__main__":
    main()

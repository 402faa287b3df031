"""Pool the runs of several quality-benchmark outputs into one report.

A device session's time caps what one ``quality.py`` call can hold, so extra seeds and extra inits of a
row arrive in separate calls (one process per seed triple, one per init). This merges them and renders
the same tables ``quality.py`` writes (means over seeds, gains paired by seed against scratch), so a
pooled number has one command behind it::

    python benchmarks/pool.py --out DIR RESULTS.json [RUN.log ...]

Inputs are ``results.json`` files, or ``quality.py`` logs, whose per-run line
(``arm2 fashion_mnist efficientnet_b0 block seed 3: final 65.6% ...``) carries the final accuracy to
0.1 point; use a log only where its ``results.json`` was not kept. The same (arm, dataset, target,
init, seed) in two inputs must agree within that rounding (a repeated run on the same device and
source repeats to the digit): a disagreement is an error, because it means the inputs did not share a
source or a protocol and must not be pooled. For the same reason two ``results.json`` inputs must name
the same device and thread count and, per arm, the same source (model, origin, its accuracy, its
checksum where recorded); a log names neither, so the caller answers for it. ``--arms`` pools only
some arms of the inputs (an older file can hold an arm whose source was trained again since). Writes
``DIR/results.json`` and ``DIR/results.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._quality_report import render_markdown

RunKey = tuple[str, str, str, str, int]

_LOG_LINE = re.compile(
    r"\] (?P<arm>arm\w*) (?P<dataset>\S+) (?P<target>\S+) (?P<init>\S+) seed (?P<seed>\d+): "
    r"final (?P<final>[\d.]+)%"
)
_TOLERANCE = 0.0006  # a log's 0.1-point rounding, as a fraction, plus float slack


class PoolConflict(ValueError):
    """Two inputs report different accuracies for the same run, or ran on different sources or devices."""


_SOURCE_FIELDS = ("model", "origin", "acc_eval", "sha256")


def fingerprint(header: Mapping[str, Any], arm: str) -> tuple[Any, ...]:
    """What must match for two results files' runs of one arm to be pooled."""
    source, env = header.get("sources", {}).get(arm, {}), header.get("environment", {})
    # A CPU run repeats to the digit only at the same thread count.
    return (env.get("device"), env.get("torch_threads"), *(source.get(f) for f in _SOURCE_FIELDS))


def check_same_sources(headers: Iterable[tuple[str, Mapping[str, Any]]], arms: AbstractSet[str]) -> None:
    seen: dict[str, tuple[str, tuple[Any, ...]]] = {}
    for name, header in headers:
        if not header:
            continue  # a log: no header to compare
        ran = {r["arm"] for r in header.get("runs", [])}
        for arm in sorted(arms & ran):
            fp = fingerprint(header, arm)
            first = seen.setdefault(arm, (name, fp))
            # A field one file lacks (older files recorded no checksum) cannot disagree.
            if any(a is not None and b is not None and a != b for a, b in zip(first[1], fp, strict=True)):
                raise PoolConflict(
                    f"{arm}: {first[0]} ran on {first[1]} but {name} on {fp}; "
                    "they did not share a source, device or thread count"
                )


def runs_from_log(text: str) -> list[dict[str, Any]]:
    return [
        {
            "arm": m["arm"], "dataset": m["dataset"], "target": m["target"], "init": m["init"],
            "seed": int(m["seed"]), "acc_final": float(m["final"]) / 100,
        }
        for m in _LOG_LINE.finditer(text)
    ]


def _key(run: Mapping[str, Any]) -> RunKey:
    return (run["arm"], run["dataset"], run["target"], run["init"], int(run["seed"]))


def pool_runs(sources: Iterable[tuple[str, Sequence[Mapping[str, Any]]]]) -> list[Mapping[str, Any]]:
    """Merge run lists; the first input that has a run keeps it, a later one must agree with it."""
    pooled: dict[RunKey, tuple[str, Mapping[str, Any]]] = {}
    for name, runs in sources:
        for run in runs:
            if run.get("acc_final") is None:
                continue
            key = _key(run)
            if key in pooled:
                first, kept = pooled[key]
                if abs(kept["acc_final"] - run["acc_final"]) > _TOLERANCE:
                    raise PoolConflict(
                        f"{' '.join(map(str, key))}: {100 * kept['acc_final']:.2f}% in {first} but "
                        f"{100 * run['acc_final']:.2f}% in {name}; they did not share a source or protocol"
                    )
                continue
            pooled[key] = (name, run)
    return [run for _, run in pooled.values()]


def load(path: Path) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]]:
    """A file's runs, and its results header (empty for a log)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".log":
        return runs_from_log(text), {}
    data = json.loads(text)
    return data.get("runs", []), data


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", type=Path, help="results.json files or quality.py logs")
    p.add_argument("--out", type=Path, required=True, help="folder for the pooled results.json / results.md")
    p.add_argument("--arms", help="comma-separated arms to pool (default: every arm in the inputs)")
    args = p.parse_args(argv)
    loaded = [(str(path), *load(path)) for path in args.inputs]
    wanted = set(args.arms.split(",")) if args.arms else {r["arm"] for _, runs, _ in loaded for r in runs}
    loaded = [(name, [r for r in runs if r["arm"] in wanted], h) for name, runs, h in loaded]
    try:
        check_same_sources(((name, h) for name, _, h in loaded), wanted)
        runs = pool_runs((name, r) for name, r, _ in loaded)
    except PoolConflict as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    header = next((h for _, _, h in loaded if h), {})
    arms = {r["arm"] for r in runs}
    config = {"arms": {a: c for a, c in header.get("config", {}).get("arms", {}).items() if a in arms}}
    for arm in arms - set(config["arms"]):
        config["arms"][arm] = {"description": "(no results.json among the inputs describes this arm)"}
    pooled = {
        "benchmark": "hmt quality, pooled",
        "profile": header.get("profile"),
        "status": "pooled",
        "command": " ".join(["python", "benchmarks/pool.py", *(sys.argv[1:] if argv is None else argv)]),
        "environment": header.get("environment", {}),
        "config": config,
        "inputs": [name for name, _, _ in loaded],
        "runs": sorted(runs, key=_key),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(pooled, indent=1) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(render_markdown(pooled), encoding="utf-8")
    print(f"{len(runs)} runs from {len(loaded)} inputs -> {args.out}/results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

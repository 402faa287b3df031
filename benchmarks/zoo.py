"""Zoo sweep (issue 3): graph + chain extraction and planned transfers across every timm family.

One representative per timm module (the smallest model by parameter count, ties by name; names
starting with ``test_`` only where a module has nothing else), skipping those over 200M parameters
unless ``--all``. Or ``--sample N --seed S``: a random sample of all names. For each model, on the
meta device: build, graph + chain extraction and the parameter account (timed, after imports and
a warm-up), then two planned transfers (``dry_run``): ``resnet50 -> model`` and
``model -> mobilenetv3_large_100``. Never stops on a model: documented :class:`HmtError` failures
and uncaught exceptions are recorded apart (the target is zero uncaught).

    python benchmarks/zoo.py                       # results in benchmarks/results/zoo.{json,md}
    python benchmarks/zoo.py --sample 50 --seed 0  # results in benchmarks/results/zoo-sample.{json,md}
    python benchmarks/zoo.py --models resnet50,vit_tiny_patch16_224 --name zoo-check

Parameter counts for choosing representatives are cached in ``results/zoo_params.json`` (one meta
build of each of ~1,400 names, a few minutes, once per timm version).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from math import prod
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PARAMS_CACHE = RESULTS / "zoo_params.json"
MAX_PARAMS = 200_000_000
SRC, TGT = "resnet50", "mobilenetv3_large_100"


@dataclass
class Row:
    name: str
    module: str
    params: int | None = None
    extractor: str | None = None
    chain_len: int | None = None
    off_chain: dict[str, int] = field(default_factory=dict)
    accounted: float | None = None  # share of parameters with an owner (chain or a reason)
    owners: dict[str, float] = field(default_factory=dict)  # share of parameters per owner
    guesses: int = 0
    build_ms: float | None = None
    extract_ms: float | None = None  # graph + chain + account, wall clock
    extract_cpu_ms: float | None = None  # the same, process CPU time (robust to a busy machine)
    plan_from_src: dict[str, Any] = field(default_factory=dict)  # resnet50 -> model
    plan_to_tgt: dict[str, Any] = field(default_factory=dict)  # model -> mobilenetv3_large_100
    error: dict[str, str] | None = None  # extraction failure: class, message, kind (documented | uncaught)


def _failure(exc: BaseException) -> dict[str, str]:
    from hmt_cli.errors import HmtError

    documented = isinstance(exc, HmtError)
    out = {"class": type(exc).__name__, "message": str(exc).splitlines()[0][:300] if str(exc) else "",
           "kind": "documented" if documented else "uncaught"}
    if not documented:
        out["where"] = traceback.format_exc(limit=-3).strip().splitlines()[-3][:300]
    return out


def _param_counts(names: list[str]) -> dict[str, int | None]:
    """Parameter count of each name (meta build), cached per timm version."""
    import timm
    import torch

    cache: dict[str, Any] = {}
    if PARAMS_CACHE.exists():
        cache = json.loads(PARAMS_CACHE.read_text())
    counts: dict[str, int | None] = cache.get("params", {}) if cache.get("timm") == timm.__version__ else {}
    missing = [n for n in names if n not in counts]
    for i, name in enumerate(missing):
        if i % 100 == 0:
            print(f"counting parameters: {i}/{len(missing)}", file=sys.stderr)
        try:
            with torch.device("meta"):
                model = timm.create_model(name)
            counts[name] = sum(p.numel() for p in model.parameters())
        except Exception:  # a name that cannot build is never a representative
            counts[name] = None
    if missing:
        RESULTS.mkdir(parents=True, exist_ok=True)
        PARAMS_CACHE.write_text(json.dumps({"timm": timm.__version__, "params": dict(sorted(counts.items()))},
                                           indent=0) + "\n")
    return counts


def representatives(include_all: bool) -> list[tuple[str, str, int | None]]:
    """(module, name, params) per timm module: its smallest buildable model."""
    import timm

    by_module = {m: timm.list_models(module=m) for m in timm.list_modules()}
    counts = _param_counts(sorted({n for names in by_module.values() for n in names}))
    reps = []
    for module, names in sorted(by_module.items()):
        real = [n for n in names if not n.startswith("test_")] or names
        built = [n for n in real if counts.get(n) is not None]
        if not built:
            reps.append((module, real[0], None))
            continue
        name = min(built, key=lambda n: (counts[n], n))
        if include_all or counts[name] <= MAX_PARAMS:
            reps.append((module, name, counts[name]))
        else:
            print(f"skipping {module}: smallest model {name} has {counts[name] / 1e6:.0f}M parameters "
                  f"(--all includes it)", file=sys.stderr)
    return reps


def sample(n: int, seed: int) -> list[tuple[str, str, int | None]]:
    import timm

    names = random.Random(seed).sample(sorted(timm.list_models()), n)
    return [(_module_of(name), name, None) for name in names]


def _module_of(name: str) -> str:
    from timm.models._registry import _model_to_module, get_arch_name

    return _model_to_module.get(get_arch_name(name), "?")


def _plan(src: str, tgt: str) -> dict[str, Any]:
    from hmt_cli.options import TransferOptions
    from hmt_cli.pipeline import transfer

    start = time.perf_counter()
    try:
        report = transfer(TransferOptions(src=src, tgt=tgt, dry_run=True, device="cpu"))
    except Exception as exc:  # recorded, never fatal: the sweep must finish
        return {"ok": False, "error": _failure(exc), "ms": round(1e3 * (time.perf_counter() - start), 1)}
    return {"ok": True, "layers_transferred": report.layers_transferred,
            "frac_params_written": round(report.frac_params_written, 4),
            "ms": round(1e3 * (time.perf_counter() - start), 1)}


def measure(module: str, name: str, params: int | None, plans: bool) -> Row:
    from hmt_cli.chain import account, find_chain
    from hmt_cli.graph import extract_graph
    from hmt_cli.models import build_model, resolve_model

    row = Row(name, module, params)
    try:
        start = time.perf_counter()
        model = build_model(resolve_model(name), device="meta")
        row.build_ms = round(1e3 * (time.perf_counter() - start), 1)
        param_shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
        row.params = sum(prod(s) for s in param_shapes.values())
        cpu, wall = time.process_time(), time.perf_counter()
        graph = extract_graph(model, name)
        chain = find_chain(graph)
        owners = account(graph, chain)
        row.extract_ms = round(1e3 * (time.perf_counter() - wall), 1)
        row.extract_cpu_ms = round(1e3 * (time.process_time() - cpu), 1)
        row.extractor, row.chain_len, row.guesses = graph.extractor, len(chain), graph.guesses
        row.off_chain = dict(sorted(Counter(o.reason for o in chain.off_chain).items()))
        by_owner: Counter[str] = Counter()
        for key, shape in param_shapes.items():
            by_owner[owners.get(key, "unaccounted")] += prod(shape)
        total = row.params or 1
        row.owners = {k: round(v / total, 4) for k, v in sorted(by_owner.items())}
        row.accounted = round(1 - by_owner["unaccounted"] / total, 4)
        del model, graph
    except Exception as exc:  # recorded, never fatal: the sweep must finish
        row.error = _failure(exc)
        return row
    if plans:
        row.plan_from_src = _plan(SRC, name)
        row.plan_to_tgt = _plan(name, TGT)
    return row


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def summarize(rows: list[Row]) -> dict[str, Any]:
    ok = [r for r in rows if r.error is None]
    walls = sorted(r.extract_ms for r in ok if r.extract_ms is not None)
    cpus = sorted(r.extract_cpu_ms for r in ok if r.extract_cpu_ms is not None)
    planned = [r for r in rows if r.plan_from_src or r.error]
    errors = [r.error for r in rows if r.error] + [
        p["error"] for r in rows for p in (r.plan_from_src, r.plan_to_tgt) if p and not p["ok"]]
    return {
        "models": len(rows),
        "chain_ok": len(ok),
        "chain_ok_pct": _pct(len(ok), len(rows)),
        "src_to_model_ok_pct": _pct(sum(bool(r.plan_from_src.get("ok")) for r in planned), len(planned)),
        "model_to_tgt_ok_pct": _pct(sum(bool(r.plan_to_tgt.get("ok")) for r in planned), len(planned)),
        "accounted_100pct": sum(r.accounted == 1.0 for r in ok),
        "extractors": dict(Counter(r.extractor for r in ok)),
        "extract_ms_median": statistics.median(walls) if walls else None,
        "extract_ms_p90": walls[int(0.9 * (len(walls) - 1))] if walls else None,
        "extract_cpu_ms_median": statistics.median(cpus) if cpus else None,
        "extract_cpu_ms_p90": cpus[int(0.9 * (len(cpus) - 1))] if cpus else None,
        "documented_errors": sum(e["kind"] == "documented" for e in errors),
        "uncaught_errors": sum(e["kind"] == "uncaught" for e in errors),
        "uncaught_types": dict(Counter(e["class"] for e in errors if e["kind"] == "uncaught")),
    }


def _plan_cell(plan: dict[str, Any]) -> str:
    if not plan:
        return "-"
    if plan["ok"]:
        return f"ok ({plan['layers_transferred']})"
    return f"{plan['error']['kind']}: {plan['error']['class']}"


def _cells(r: Row) -> list[str]:
    off = " ".join(f"{k}:{v}" for k, v in r.off_chain.items())
    error = f"{r.error['kind']} {r.error['class']}: {r.error['message'][:80]}" if r.error else ""
    return [r.module, r.name, f"{r.params / 1e6:.1f}M" if r.params else "?", r.extractor or "-",
            str(r.chain_len if r.chain_len is not None else "-"), off, f"{100 * r.accounted:.1f}%"
            if r.accounted is not None else "-", f"{r.extract_ms:.0f}" if r.extract_ms else "-",
            f"{r.extract_cpu_ms:.0f}" if r.extract_cpu_ms else "-",
            _plan_cell(r.plan_from_src), _plan_cell(r.plan_to_tgt), error]


COLUMNS = ["module", "model", "params", "extractor", "chain", "off-chain", "accounted", "ms", "cpu ms",
           f"{SRC} ->", f"-> {TGT}", "error"]


def markdown(meta: dict[str, Any], summary: dict[str, Any], rows: list[Row]) -> str:
    env = (f"strategy `{meta.get('strategy')}`, timm {meta['timm']}, torch {meta['torch']}, {meta['cpus']} CPUs, "
           f"load average at start {meta['load_start']}")
    lines = [f"# Zoo sweep: {meta['selection']}", "", f"`{meta['command']}`  ", env, "", "| summary | |",
             "|---|---|", *[f"| {k} | {v} |" for k, v in summary.items()], "",
             "`ms` / `cpu ms`: graph + chain + account on the meta device, wall clock / process CPU time, after "
             "imports and a warm-up; `(n)`: layers the planned transfer writes.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def show(summary: dict[str, Any], rows: list[Row]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="zoo sweep", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(*_cells(r))
    console = Console(width=max(160, Console().width))
    console.print(table)
    console.print(summary)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="include representatives over 200M parameters")
    parser.add_argument("--sample", type=int, help="a random sample of N timm names instead of representatives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", help="comma-separated names instead of representatives")
    parser.add_argument("--no-plans", action="store_true", help="skip the two planned transfers")
    parser.add_argument("--name", help="results file stem (default zoo, or zoo-sample)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # timm deprecation chatter would drown the table
    import timm
    import torch

    from hmt_cli.graph import extract_graph
    from hmt_cli.models import build_model, resolve_model

    if args.models:
        todo = [(_module_of(n), n, None) for n in args.models.split(",")]
    elif args.sample:
        todo = sample(args.sample, args.seed)
    else:
        todo = representatives(args.all)
    extract_graph(build_model(resolve_model("resnet18"), device="meta"), "warm-up")  # first-call costs
    from hmt_cli.options import DEFAULT_STRATEGY  # what the planned transfers use

    meta = {"selection": "sample" if args.sample else ("models" if args.models else "representatives"),
            "command": " ".join(["python benchmarks/zoo.py", *(argv if argv is not None else sys.argv[1:])]),
            "strategy": DEFAULT_STRATEGY,
            "timm": timm.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_start": [round(x, 2) for x in os.getloadavg()]}
    rows = []
    for i, (module, name, params) in enumerate(todo):
        if args.sample and not args.all and params is None:
            params = _param_counts([name]).get(name)
            if params and params > MAX_PARAMS:
                print(f"skipping {name}: {params / 1e6:.0f}M parameters", file=sys.stderr)
                continue
        row = measure(module, name, params, plans=not args.no_plans)
        rows.append(row)
        status = row.error["class"] if row.error else f"chain {row.chain_len} in {row.extract_ms:.0f} ms"
        print(f"[{i + 1}/{len(todo)}] {name}: {status}", file=sys.stderr, flush=True)
    meta["load_end"] = [round(x, 2) for x in os.getloadavg()]
    summary = summarize(rows)
    stem = args.name or ("zoo-sample" if args.sample else "zoo")
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "summary": summary, "models": [asdict(r) for r in rows]}
    (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown(meta, summary, rows))
    show(summary, rows)
    return 1 if summary["uncaught_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Signal-check sweep: a real transfer from a random-init source into one model per timm module.

    python benchmarks/signal_sweep.py                       # all representatives (the zoo sweep's list)
    python benchmarks/signal_sweep.py --limit 20            # the first 20 modules, alphabetically
    python benchmarks/signal_sweep.py --strategy stage      # results in signal-stage.{json,md}
    python benchmarks/signal_sweep.py --strategy block-initscale-auto --src benchmarks.cifar_resnet:resnet20
                                                            # a narrow source: signal-<strategy>-resnet20.*

For each target: ``transfer(strategy=...)`` (default: hmt's default strategy, with its signal policy) from a random-init
resnet18 (``--src``: another timm name or ``module:function`` factory; saved once as safetensors), recording
how many chain layers the data-free check flagged and reverted to init (the rescaling should leave none: the
"by construction" claim) and whether the written target passes the check (no layer flagged after fallback).
The check needs no data, so a random-init source is a fair stress test. Writes
``benchmarks/results/signal-<strategy>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.zoo import representatives

RESULTS = Path(__file__).resolve().parent / "results"


def _source(tmp: Path, name: str = "resnet18") -> Path:
    import torch
    from safetensors.torch import save_file

    from hmt_cli.models import build_model, resolve_model

    torch.manual_seed(0)
    model = build_model(resolve_model(name), device="cpu")
    path = tmp / "source-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def measure(name: str, weights: Path, tmp: Path, strategy: str, src: str = "resnet18") -> dict[str, Any]:
    from hmt_cli.errors import HmtError
    from hmt_cli.options import TransferOptions
    from hmt_cli.pipeline import transfer

    start = time.perf_counter()
    row: dict[str, Any] = {"model": name}
    try:
        report = transfer(TransferOptions(src=src, tgt=name, out=tmp / "out.safetensors", src_weights=weights,
                                          strategy=strategy, force=True, device="cpu"))
    except HmtError as exc:
        row.update(status="error", error=type(exc).__name__, message=exc.message[:200])
    except Exception as exc:  # an uncaught exception is a bug: record it, keep sweeping
        row.update(status="uncaught", error=type(exc).__name__, message=str(exc)[:200],
                   where=traceback.format_exc(limit=-2)[-300:])
    else:
        flagged = [s.path for s in report.signal if s.flagged]  # after fallback
        row.update(status="pass" if not flagged else "flagged", checked=len(report.signal), flagged=len(flagged),
                   fallback=len(report.fallback), flagged_layers=[*report.fallback, *flagged][:5],
                   frac_params_written=round(report.frac_params_written, 4))
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, help="only the first N representatives")
    parser.add_argument("--models", help="comma-separated names instead of the representatives")
    from hmt_cli.options import DEFAULT_STRATEGY

    parser.add_argument("--strategy", default=DEFAULT_STRATEGY,
                        help=f"hmt strategy to transfer with (default: {DEFAULT_STRATEGY})")
    parser.add_argument("--src", default="resnet18",
                        help="the random-init source: a timm name or module:function factory (default: resnet18)")
    args = parser.parse_args(argv)
    names = args.models.split(",") if args.models else [name for _, name, _ in representatives(False)]
    names = names[: args.limit] if args.limit else names
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        weights = _source(tmp, args.src)
        for name in names:
            row = measure(name, weights, tmp, args.strategy, args.src)
            rows.append(row)
            print(f"{name:40s} {row['status']:9s} {row.get('fallback', '')!s:>3} {row['seconds']:6.1f}s "
                  f"{row.get('message', '')}", flush=True)
    ran = [r for r in rows if r["status"] in ("pass", "flagged")]
    summary = {
        "models": len(rows),
        "transferred": len(ran),
        "passed": sum(r["status"] == "pass" for r in rows),
        "passed_without_fallback": sum(r["status"] == "pass" and not r.get("fallback") for r in rows),
        "pass_rate_of_all": round(sum(r["status"] == "pass" for r in rows) / max(len(rows), 1), 4),
        "documented_errors": sum(r["status"] == "error" for r in rows),
        "uncaught": sum(r["status"] == "uncaught" for r in rows),
    }
    RESULTS.mkdir(exist_ok=True)
    short = args.src.rpartition(":")[2]  # benchmarks.cifar_resnet:resnet20 -> resnet20
    stem = f"signal-{args.strategy}" + ("" if args.src == "resnet18" else f"-{short}")
    (RESULTS / f"{stem}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    flags = f" --limit {args.limit}" if args.limit else ""
    flags += f" --strategy {args.strategy}" + ("" if args.src == "resnet18" else f" --src {args.src}")
    lines = [f"# Signal-check sweep (`{args.strategy}`, random-init {short} source)", "",
             "Command: `python benchmarks/signal_sweep.py" + flags + "`", "",
             "| " + " | ".join(summary) + " |", "|" + "---|" * len(summary),
             "| " + " | ".join(str(v) for v in summary.values()) + " |", "",
             "| model | status | checked | fell back | flagged after | params written | s | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        note = r.get("message", "") or ", ".join(r.get("flagged_layers", []))
        lines.append(f"| {r['model']} | {r['status']} | {r.get('checked', '')} | {r.get('fallback', '')} | "
                     f"{r.get('flagged', '')} | "
                     f"{r.get('frac_params_written', '')} | {r['seconds']} | {note} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

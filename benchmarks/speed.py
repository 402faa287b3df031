"""How close ``hmt transfer`` runs to the I/O floor: whole-process wall time and peak RSS (issue 6).

For each pair it times, interleaved run by run so machine drift hits all three alike:

* ``hmt transfer --src S --src-weights S.safetensors --tgt T --out ... --quiet --force``;
* ``benchmarks/floor.py``: import torch + timm, build T (seeded, CPU), read every tensor of the
  same source file with ``safe_open``, write T's state dict with ``save_file`` -- the work no
  implementation can skip;
* ``python -c "import torch, timm"``: the import-only baseline both of them pay.

Each child is reaped with ``os.wait4``, so its peak RSS is its own (``ru_maxrss``), not the max
over all children. Source weights are generated once (fp32, deterministic) into a cache outside
git. With a GPU, it also checks that ``--device cuda`` writes what the CPU writes and times the
transfer stage (``apply_plan``) alone on both devices.

    python benchmarks/speed.py                 # every pair, results in benchmarks/results/speed.{json,md}
    python benchmarks/speed.py --quick         # the first pair only
    python benchmarks/speed.py --pairs vith-vitl --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FLOOR = HERE / "floor.py"
DEFAULT_CACHE = HERE / ".cache"  # gitignored: generated weights and scratch outputs
DEFAULT_RESULTS = HERE / "results"
REAL_INIT_MAX_PARAMS = 100_000_000  # above this a seeded normal fill replaces timm's (slow) init
REL_TOL = 1e-6  # cuda vs cpu outputs: bitwise, or within this relative error


@dataclass(frozen=True)
class Pair:
    key: str
    src: str
    tgt: str
    runs: int  # default number of timed runs (medians are reported)
    device: str = "cpu"
    max_wall_ratio: float | None = None  # issue 6 targets, hmt / floor
    max_rss_ratio: float | None = None


PAIRS: tuple[Pair, ...] = (
    Pair("resnet50-mnv3", "resnet50", "mobilenetv3_large_100", 5, max_wall_ratio=1.10),
    Pair("convnext-vitb", "convnext_base", "vit_base_patch16_224", 5),
    Pair("vitl-vitb", "vit_large_patch16_224", "vit_base_patch16_224", 3),
    Pair("vith-vitl", "vit_huge_patch14_224", "vit_large_patch16_224", 3, max_wall_ratio=1.5, max_rss_ratio=1.5),
    Pair("resnet50-mnv3-cuda", "resnet50", "mobilenetv3_large_100", 5, device="cuda"),
)


@dataclass
class Sample:
    wall_s: float
    max_rss_mb: float
    cpu_s: float  # user + system, all threads: less sensitive than wall to other load on the machine


@dataclass
class PairResult:
    pair: Pair
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    runs: int = 0
    hmt: list[Sample] = field(default_factory=list)
    floor: list[Sample] = field(default_factory=list)
    imports: list[Sample] = field(default_factory=list)
    hmt_cold: list[Sample] = field(default_factory=list)  # analysis cache off: what a first run of a pair costs
    cuda: dict[str, Any] | None = None
    loadavg: list[float] = field(default_factory=list)  # 1-min load before and after each round: the noise


# -- running and measuring one child process -------------------------------------------------


def measure(cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> Sample:
    """Run ``cmd`` to completion; its wall time and its own peak RSS (wait4, not RUSAGE_CHILDREN's max)."""
    with open(log, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}: {' | '.join(tail)}")
    return Sample(wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)  # ru_maxrss: kilobytes


def hmt_command() -> list[str]:
    """The console script of this interpreter (not a pyenv shim, whose bash start-up would count)."""
    script = Path(sys.executable).parent / "hmt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "hmt_cli"]


IMPORTS = "import torch, timm"
IMPORTS_GC_TUNED = "import gc; gc.disable(); import torch, timm; gc.freeze(); gc.enable()"


def commands(pair: Pair, weights: Path, scratch: Path, gc_tuned: bool = False) -> dict[str, list[str]]:
    """The processes of a round; ``gc_tuned``: the floor and the baseline skip GC work (see floor.py).

    ``hmt`` runs with its analysis cache in the scratch folder (filled by the warm-up run, as the page
    cache is for every command): the steady state of a pipeline. ``hmt_cold`` runs with the cache off:
    the first transfer of a pair.
    """
    hmt = [*hmt_command(), "transfer", "--src", pair.src, "--src-weights", str(weights), "--tgt", pair.tgt,
           "--out", str(scratch / "hmt.safetensors"), "--device", pair.device, "--quiet", "--force"]
    floor = [sys.executable, str(FLOOR), "--src-weights", str(weights), "--tgt", pair.tgt,
             "--out", str(scratch / "floor.safetensors"), *(["--gc-tuned"] if gc_tuned else [])]
    imports = [sys.executable, "-c", IMPORTS_GC_TUNED if gc_tuned else IMPORTS]
    return {"imports": imports, "floor": floor, "hmt": hmt, "hmt_cold": hmt}


def command_env(name: str, scratch: Path) -> dict[str, str]:
    return {"HMT_CACHE_DIR": "off" if name == "hmt_cold" else str(scratch / "hmt-cache")}


def time_pair(pair: Pair, weights: Path, scratch: Path, runs: int, gc_tuned: bool = False) -> PairResult:
    """One untimed warm-up of each command, then ``runs`` interleaved rounds."""
    cmds = commands(pair, weights, scratch, gc_tuned)
    result = PairResult(pair, runs=runs, loadavg=[round(os.getloadavg()[0], 2)])
    log = scratch / "stderr.log"
    for name, cmd in cmds.items():  # warm the page cache and the output file for every command alike
        measure(cmd, scratch, log, command_env(name, scratch))
    for i in range(runs):
        k = i % len(cmds)
        order = list(cmds)[k:] + list(cmds)[:k]  # rotate, so no command always runs first
        for name in order:
            sample = measure(cmds[name], scratch, log, command_env(name, scratch))
            getattr(result, name).append(sample)
            print(f"  {pair.key} run {i + 1}/{runs} {name:8s} {sample.wall_s:7.2f} s wall {sample.cpu_s:7.2f} s cpu "
                  f"{sample.max_rss_mb:8.0f} MB", file=sys.stderr)
        result.loadavg.append(round(os.getloadavg()[0], 2))
    return result


# -- source weights, generated once -----------------------------------------------------------


def ensure_weights(name: str, cache: Path) -> Path:
    """``cache/NAME.safetensors``, generated in a child process so this driver stays small."""
    path = cache / f"{name}.safetensors"
    if not path.exists():
        print(f"generating {path} ...", file=sys.stderr)
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "_make-weights", name, str(path)], check=True)
        print(f"  done in {time.perf_counter() - start:.1f} s ({path.stat().st_size / 1e9:.2f} GB)", file=sys.stderr)
    return path


def make_weights(name: str, path: Path) -> None:
    """fp32 weights: timm's seeded init for small models, a seeded normal fill for big ones (faster)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(name, device="meta")
    if sum(p.numel() for p in model.parameters()) <= REAL_INIT_MAX_PARAMS:
        model = timm.create_model(name)
    else:
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for key, tensor in model.state_dict().items():
                _fill(key, tensor)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    tmp.replace(path)  # an interrupted run leaves no half-written cache entry


def _fill(key: str, tensor: Any) -> None:
    import torch

    # What timm's own init gives (and, roughly, what trained checkpoints look like): norm gains 1 and
    # biases 0; weights N(0, 0.02) as a ViT's. Gains of ~0.02 would be a degenerate source whose every
    # transferred norm the signal check reverts, which is not the common case the benchmark times.
    if not tensor.is_floating_point() or key.endswith(".bias"):
        tensor.zero_()
    elif key.endswith("running_var") or (tensor.dim() == 1 and key.endswith(".weight")):
        tensor.fill_(1.0)
    else:  # per-key seed: the file does not depend on iteration order
        gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        tensor.normal_(0.0, 0.02, generator=gen)


# -- the GPU checks ---------------------------------------------------------------------------


def cuda_available() -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def cuda_check(pair: Pair, weights: Path, scratch: Path) -> dict[str, Any]:
    """CPU vs CUDA: same output file contents, and the transfer stage alone timed on both."""
    outs = {}
    for device in ("cpu", "cuda"):
        out = scratch / f"check-{device}.safetensors"
        cmd = [*hmt_command(), "transfer", "--src", pair.src, "--src-weights", str(weights), "--tgt", pair.tgt,
               "--out", str(out), "--device", device, "--json", "--force"]
        _run_checked(cmd)
        outs[device] = out
    probe = [sys.executable, __file__, "_stage", pair.src, pair.tgt, str(weights)]
    stage = json.loads(_run_checked(probe))
    return {**compare_files(outs["cpu"], outs["cuda"]), **stage}


def _run_checked(cmd: list[str]) -> str:
    """stdout of ``cmd``; a failure raises with the last lines of its stderr, not just an exit code."""
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}: {tail}")
    return proc.stdout


def compare_files(a: Path, b: Path) -> dict[str, Any]:
    import torch
    from safetensors import safe_open

    worst, bitwise = 0.0, True
    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        if set(fa.keys()) != set(fb.keys()):
            return {"equal_keys": False, "bitwise": False, "max_rel_err": None, "within_tol": False}
        for key in fa.keys():  # noqa: SIM118
            x, y = fa.get_tensor(key), fb.get_tensor(key)
            if torch.equal(x, y):
                continue
            bitwise = False
            x, y = x.double(), y.double()
            worst = max(worst, float((x - y).abs().max() / x.abs().max().clamp_min(1e-30)))
    return {"equal_keys": True, "bitwise": bitwise, "max_rel_err": worst, "within_tol": worst <= REL_TOL}


def stage_times(src: str, tgt: str, weights: Path, devices: tuple[str, ...] = ("cpu", "cuda"),
                repeats: int = 3) -> dict[str, float]:
    """Median seconds of ``apply_plan`` (the transfer arithmetic) per device, plan and target built once."""
    import torch

    from hmt_cli.apply import apply_plan
    from hmt_cli.io import open_weights
    from hmt_cli.match import get_strategy
    from hmt_cli.options import DEFAULT_STRATEGY
    from hmt_cli.pipeline import analyze
    from hmt_cli.plan import make_plan

    s, t = analyze(src), analyze(tgt)
    plan = make_plan(get_strategy(DEFAULT_STRATEGY), s.graph, s.chain, t.graph, t.chain)
    source = open_weights(weights)
    state = timm_state(tgt)  # apply writes into these tensors in place: later runs start from the last output,
    # which changes the values apply reads as a base, not the work it does
    times: dict[str, float] = {}
    for name in devices:
        device = torch.device(name)
        apply_plan(plan, source, dict(state), device)  # warm-up: CUDA context, kernels, page cache
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            apply_plan(plan, source, dict(state), device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            runs.append(time.perf_counter() - start)
        times[f"stage_{name}_s"] = statistics.median(runs)
    return times


def timm_state(name: str) -> dict[str, Any]:
    import timm
    import torch

    torch.manual_seed(0)
    return timm.create_model(name).state_dict()


# -- summary, files, table --------------------------------------------------------------------


KINDS = ("hmt", "hmt_cold", "floor", "imports")


def _median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples)


def _paired(a: list[Sample], b: list[Sample]) -> float:
    """Median over rounds of a/b measured in the same round: drift of the machine cancels within a round."""
    return statistics.median(x.wall_s / y.wall_s for x, y in zip(a, b, strict=True))


def summarize(res: PairResult) -> dict[str, Any]:
    row: dict[str, Any] = {"pair": res.pair.key, "src": res.pair.src, "tgt": res.pair.tgt,
                           "device": res.pair.device, "status": res.status, "reason": res.reason, "runs": res.runs,
                           "loadavg": res.loadavg}
    if res.status == "ok":
        wall = {n: _median(getattr(res, n), "wall_s") for n in KINDS}
        rss = {n: _median(getattr(res, n), "max_rss_mb") for n in KINDS}
        cpu = {n: _median(getattr(res, n), "cpu_s") for n in KINDS}
        best = {n: min(s.wall_s for s in getattr(res, n)) for n in KINDS}
        row.update(
            hmt_wall_s=wall["hmt"], floor_wall_s=wall["floor"], imports_wall_s=wall["imports"],
            wall_ratio=wall["hmt"] / wall["floor"],
            hmt_cold_wall_s=wall["hmt_cold"], cold_wall_ratio=wall["hmt_cold"] / wall["floor"],
            paired_wall_ratio=_paired(res.hmt, res.floor), paired_cold_ratio=_paired(res.hmt_cold, res.floor),
            hmt_beyond_imports_s=wall["hmt"] - wall["imports"],
            floor_beyond_imports_s=wall["floor"] - wall["imports"],
            hmt_rss_mb=rss["hmt"], floor_rss_mb=rss["floor"], imports_rss_mb=rss["imports"],
            rss_ratio=rss["hmt"] / rss["floor"],
            hmt_cpu_s=cpu["hmt"], floor_cpu_s=cpu["floor"], imports_cpu_s=cpu["imports"],
            cpu_ratio=cpu["hmt"] / cpu["floor"],
            best_wall_s=best, best_wall_ratio=best["hmt"] / best["floor"],  # the least disturbed runs
            samples={n: [asdict(s) for s in getattr(res, n)] for n in KINDS},
        )
        row["targets"] = targets(res.pair, row)
    if res.cuda is not None:
        row["cuda"] = res.cuda
    return row


def targets(pair: Pair, row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if pair.max_wall_ratio is not None:
        out["wall"] = {"max": pair.max_wall_ratio, "met": row["paired_wall_ratio"] <= pair.max_wall_ratio}
    if pair.max_rss_ratio is not None:
        out["rss"] = {"max": pair.max_rss_ratio, "met": row["rss_ratio"] <= pair.max_rss_ratio}
    return out


def machine() -> dict[str, Any]:
    import safetensors
    import timm
    import torch

    info = {
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "safetensors": safetensors.__version__, "cuda": torch.cuda.is_available(),
        "mem_total_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
    }
    if info["cuda"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(row: dict[str, Any], key: str, spec: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, spec)


def _verdict(row: dict[str, Any]) -> str:
    marks = [f"{k} {'ok' if v['met'] else 'MISSED'} (<= {v['max']}x)" for k, v in row.get("targets", {}).items()]
    return "; ".join(marks) or "-"


COLUMNS = ("pair", "hmt s", "floor s", "imports s", "hmt/floor", "paired", "cold s", "cold paired", "hmt-imp s",
           "floor-imp s", "CPU ratio", "hmt MB", "floor MB", "RSS ratio", "targets")


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        if r["status"] != "ok":
            out.append([r["pair"], *(["-"] * (len(COLUMNS) - 2)), f"{r['status']}: {r['reason']}"])
            continue
        cells = [("hmt_wall_s", ".2f"), ("floor_wall_s", ".2f"), ("imports_wall_s", ".2f"), ("wall_ratio", ".3f"),
                 ("paired_wall_ratio", ".3f"), ("hmt_cold_wall_s", ".2f"), ("paired_cold_ratio", ".3f"),
                 ("hmt_beyond_imports_s", ".2f"), ("floor_beyond_imports_s", ".2f"), ("cpu_ratio", ".3f"),
                 ("hmt_rss_mb", ".0f"), ("floor_rss_mb", ".0f"), ("rss_ratio", ".2f")]
        label = f"{r['src']} -> {r['tgt']} ({r['device']}, {r['runs']} runs)"
        out.append([label, *(_fmt(r, key, spec) for key, spec in cells), _verdict(r)])
    return out


def markdown(doc: dict[str, Any]) -> str:
    rows = table_rows(doc["pairs"])
    lines = [
        "# hmt speed vs the I/O floor", "",
        f"Command: `{doc['command']}`  ", f"Date: {doc['date']}  ",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in doc["machine"].items()) + "  ",
        f"Load average before/after: {doc['loadavg_before']} / {doc['loadavg_after']}  ",
        f"Floor: {doc['floor_mode']}; import baseline: `python -c \"{doc['imports_baseline']}\"`", "",
        "Medians over the runs; `hmt` = steady state (analysis cache filled by the warm-up run), `cold` = "
        "`HMT_CACHE_DIR=off`, a pair's first transfer; `paired` = median over rounds of hmt/floor within a round "
        "(the machine's drift cancels; the wall target is judged on it, the RSS target on the ratio of medians); "
        "`-imp` = wall minus the import-only baseline measured in the same rounds; CPU ratio = "
        "user+system seconds, hmt / floor (steadier than wall when the machine is shared); MB = peak RSS of the "
        "process (`wait4` ru_maxrss).", "",
        "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    cuda_rows = [r for r in doc["pairs"] if r.get("cuda")]
    if cuda_rows:
        lines += ["", "## CUDA vs CPU", "",
                  f"Output files compared tensor by tensor (target: bitwise, or max relative error <= {REL_TOL}); "
                  "stage = `apply_plan` alone (the transfer arithmetic, source read lazily from a warm page "
                  "cache), median of 3 after a warm-up, default strategy.", "",
                  "| pair | bitwise | max rel err | within tol | stage cpu s | stage cuda s | cuda speed-up |",
                  "|---|---|---|---|---|---|---|"]
        for r in cuda_rows:
            c = r["cuda"]
            cpu_s, cuda_s = c.get("stage_cpu_s"), c.get("stage_cuda_s")
            speedup = f"{cpu_s / cuda_s:.2f}x" if cpu_s and cuda_s else "-"
            lines.append(f"| {r['pair']} | {c.get('bitwise')} | {c.get('max_rel_err')} | {c.get('within_tol')} | "
                         f"{cpu_s if cpu_s is not None else '-'} | {cuda_s if cuda_s is not None else '-'} | "
                         f"{speedup} |")
    return "\n".join(lines) + "\n"


def print_table(rows: list[dict[str, Any]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text is enough where rich is missing
        for r in table_rows(rows):
            print("  ".join(r))
        return
    table = Table(*COLUMNS, title="hmt vs floor (medians)")
    for r in table_rows(rows):
        table.add_row(*r)
    Console(width=200).print(table)


# -- driver -----------------------------------------------------------------------------------


def run_pair(pair: Pair, args: argparse.Namespace, has_cuda: bool) -> PairResult:
    if pair.device == "cuda" and not has_cuda:
        return PairResult(pair, status="skipped", reason="no CUDA device (torch.cuda.is_available() is False)")
    weights = ensure_weights(pair.src, args.cache)
    scratch = Path(tempfile.mkdtemp(prefix=f"speed-{pair.key}-", dir=args.cache))
    try:
        if args.cuda_only and pair.device == "cpu":  # the GPU checks alone: no timed rounds
            if not has_cuda:
                return PairResult(pair, status="skipped", reason="--cuda-only without a CUDA device")
            return PairResult(pair, status="cuda-only", reason="timing skipped (--cuda-only)",
                              cuda=cuda_check(pair, weights, scratch))
        result = time_pair(pair, weights, scratch, args.runs or pair.runs, args.gc_tuned_floor)
        if has_cuda and pair.device == "cpu":
            result.cuda = cuda_check(pair, weights, scratch)
        return result
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        return PairResult(pair, status="failed", reason=str(exc)[:300])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hmt transfer vs the I/O floor (issue 6).")
    parser.add_argument("--pairs", help=f"comma-separated keys: {', '.join(p.key for p in PAIRS)}")
    parser.add_argument("--quick", action="store_true", help="the first pair only")
    parser.add_argument("--runs", type=int, help="timed runs per pair (default: 5 small pairs, 3 big)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="generated weights and scratch files")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where speed.{json,md} go")
    parser.add_argument("--gc-tuned-floor", action="store_true",
                        help="floor and import baseline skip garbage collection of the imports (floor.py --gc-tuned); "
                        "the fair floor once hmt does the same")
    parser.add_argument("--cuda-only", action="store_true",
                        help="CPU pairs: only the CUDA checks (output equality, stage times), no timed rounds; "
                        "CUDA pairs are timed as usual")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only recompute the table of an earlier speed.json from its samples (no timing)")
    args = parser.parse_args(argv)
    keys = {p.key: p for p in PAIRS}
    chosen = args.pairs.split(",") if args.pairs else list(keys)
    unknown = [k for k in chosen if k not in keys]
    if unknown:
        parser.error(f"unknown pair(s) {', '.join(unknown)}; known: {', '.join(keys)}")
    args.selected = [keys[k] for k in chosen][:1] if args.quick else [keys[k] for k in chosen]
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be >= 1")
    return args


def rerender(path: Path, results: Path) -> None:
    """Summaries and Markdown of an earlier run, recomputed from its stored samples."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    pairs = {p.key: p for p in PAIRS}
    rows = []
    for row in doc["pairs"]:
        res = PairResult(pairs[row["pair"]], status=row["status"], reason=row["reason"], runs=row["runs"],
                         loadavg=row["loadavg"], cuda=row.get("cuda"))
        for kind, samples in row.get("samples", {}).items():
            setattr(res, kind, [Sample(**s) for s in samples])
        rows.append(summarize(res))
    doc["pairs"] = rows
    results.mkdir(parents=True, exist_ok=True)
    (results / "speed.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (results / "speed.md").write_text(markdown(doc), encoding="utf-8")
    print_table(rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render:
        rerender(args.render, args.results)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    has_cuda = cuda_available()
    doc: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "machine": machine(), "hmt": hmt_command(),
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "floor_mode": "gc-tuned" if args.gc_tuned_floor else "plain",
        "imports_baseline": IMPORTS_GC_TUNED if args.gc_tuned_floor else IMPORTS,
    }
    rows: list[dict[str, Any]] = []
    doc["pairs"] = rows
    args.results.mkdir(parents=True, exist_ok=True)
    for pair in args.selected:
        print(f"{pair.key}: {pair.src} -> {pair.tgt} ({pair.device})", file=sys.stderr)
        rows.append(summarize(run_pair(pair, args, has_cuda)))
        doc["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        # after every pair: a run stopped part-way still leaves the pairs it finished
        (args.results / "speed.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        (args.results / "speed.md").write_text(markdown(doc), encoding="utf-8")
    print_table(rows)
    print(f"wrote {args.results / 'speed.json'} and {args.results / 'speed.md'}", file=sys.stderr)


def _internal(argv: list[str]) -> bool:
    """Child-process entry points: ``_make-weights NAME PATH`` and ``_stage SRC TGT WEIGHTS``."""
    if argv[:1] == ["_make-weights"]:
        make_weights(argv[1], Path(argv[2]))
        return True
    if argv[:1] == ["_stage"]:
        sys.path.insert(0, str(ROOT))  # the checkout's hmt_cli, as the CLI would import it
        print(json.dumps(stage_times(argv[1], argv[2], Path(argv[3]))))
        return True
    return False


if __name__ == "__main__":
    if not _internal(sys.argv[1:]):
        main()

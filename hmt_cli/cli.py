"""The ``hmt`` command line: flags -> options -> pipeline; errors -> one line and an exit code.

Thin by design: no torch/timm import at module level, so ``hmt --help`` and argument errors
answer in a fraction of a second. Each command imports its stage lazily.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import HmtError, Interrupted, OutputError, UsageError
from .options import DEFAULT_STRATEGY
from .output import Output

__all__ = ["app", "main"]

DEBUG_ENV = "HMT_DEBUG"

app = typer.Typer(
    name="hmt",
    help="Heterogeneous model transfer: initialize any timm network from a pretrained network of a "
    "different architecture. Exit codes (docs/errors.md): 2 usage, 3 model, 4-5 weights, 6 model "
    "unsupported, 7 invalid values, 8 output, 130 interrupted.",
    add_completion=False,
    no_args_is_help=True,
    # Plain help: Rich-formatted help imports ~0.3 s of modules, and `hmt --help` must answer at once.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def debug_enabled() -> bool:
    """``HMT_DEBUG=1`` (any value but empty/0/false/no/off) adds the traceback to every failure."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _fail(out: Output, line: str, code: int) -> None:
    out.close()  # stop a live progress bar first, or it redraws over the message
    if debug_enabled():
        traceback.print_exc(file=sys.stderr)
    out.error(line)
    raise typer.Exit(code) from None


@contextlib.contextmanager
def _interrupt_recorder() -> Iterator[threading.Event]:
    """Remember that Ctrl-C arrived, whatever exception it ends up surfacing as.

    A KeyboardInterrupt raised while native code (safetensors, torch) calls back into Python can be
    swallowed there and resurface as that library's own error (CI saw a safetensors read fail with
    "could not determine the shape of object type 'UntypedStorage'"). The flag lets such a failure be
    reported as what it is: an interruption, exit 130.
    """
    seen = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield seen  # signal handlers can only be installed from the main thread
        return

    def on_sigint(signum: int, frame: Any) -> None:
        seen.set()
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _errors(out: Output) -> Iterator[None]:
    """HmtError -> one line + its exit code; Ctrl-C -> 130; anything else -> 1 (bug).

    With HMT_DEBUG set the traceback comes first, but the line and the exit code stay the same, so
    turning debugging on never changes what a pipeline sees as the outcome.
    """
    interrupted = Interrupted("interrupted; nothing was written")
    with _interrupt_recorder() as sigint:
        try:
            yield
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            _fail(out, interrupted.one_line(), Interrupted.exit_code)
        except Exception as exc:
            if sigint.is_set():  # Ctrl-C surfaced as some library's error: report the cause
                _fail(out, interrupted.one_line(), Interrupted.exit_code)
            _report(out, exc)
        finally:
            out.close()


def _report(out: Output, exc: Exception) -> None:
    if isinstance(exc, HmtError):
        _fail(out, exc.one_line(), exc.exit_code)
    message = " ".join(str(exc).split())[:300]
    _fail(out, f"hmt: internal error: {type(exc).__name__}: {message} (rerun with {DEBUG_ENV}=1 for the "
          "traceback and report it)", 1)


def _import_backends() -> None:
    """Import torch and timm with the garbage collector paused, then freeze what they created.

    The two imports allocate about a million long-lived objects; with the collector running, its
    generational passes over them cost ~1 s of a ~3 s import, time no transfer needs to spend. Frozen,
    they also stay out of every later collection. Everything after this runs with the collector on.
    """
    if "timm" in sys.modules:
        return
    gc.disable()
    try:
        import timm  # noqa: F401
        import torch  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No human report on stderr.")]


@app.command()
def transfer(
    src: Annotated[str | None, typer.Option(metavar="NAME", help="Source model: timm name or module:callable.")] = None,
    tgt: Annotated[str | None, typer.Option(metavar="NAME", help="Target model: timm name or module:callable.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output .safetensors (target state dict).")] = None,
    src_weights: Annotated[Path | None, typer.Option(
        help="Source checkpoint (.safetensors or torch file, loaded weights-only). Default: timm's pretrained "
        "weights (hub or cache).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Target classifier size (default: timm's).")] = None,
    strategy: Annotated[str | None, typer.Option(
        help=f"Transfer strategy (see `hmt strategies`) [{DEFAULT_STRATEGY}].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the target's own init (untransferred) [0].")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]: where the math runs [auto].")] = None,
    dtype: Annotated[str | None, typer.Option(help="Output dtype: float32 | float16 | bfloat16 [source's].")] = None,
    src_arg: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="Source constructor argument.")] = None,
    tgt_arg: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="Target constructor argument.")] = None,
    signal_check: Annotated[str | None, typer.Option(
        help="off | report | fallback: the data-free signal check of the result [the strategy's].")] = None,
    head: Annotated[str | None, typer.Option(
        help="init | transfer: the target's classifier keeps its init, or takes the source's (only for the "
        "same label space, e.g. both ImageNet-1k) [init].")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML preset (configs/*.toml); flags override it.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --out.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and report; write nothing.")] = False,
    json_mode: JsonOpt = False,
    report: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Transfer a pretrained source into a different target architecture; write a safetensors init."""
    sink = Output(json_mode=json_mode, quiet=quiet)
    with _errors(sink):
        from .options import TransferOptions, load_config, parse_model_args

        values: dict[str, Any] = load_config(config) if config else {}
        flags = {"src": src, "tgt": tgt, "out": out, "src_weights": src_weights, "num_classes": num_classes,
                 "strategy": strategy, "seed": seed, "device": device, "dtype": dtype, "signal_check": signal_check,
                 "head": head}
        values.update({k: v for k, v in flags.items() if v is not None})
        values["force"] = force or bool(values.get("force", False))
        values["dry_run"] = dry_run or bool(values.get("dry_run", False))
        if src_arg:
            values["src_kwargs"] = {**values.get("src_kwargs", {}), **parse_model_args(src_arg, "--src-arg")}
        if tgt_arg:
            values["tgt_kwargs"] = {**values.get("tgt_kwargs", {}), **parse_model_args(tgt_arg, "--tgt-arg")}
        for required in ("src", "tgt"):
            if not values.get(required):
                raise UsageError(f"missing --{required}", hint="see `hmt transfer --help`")
        opts = TransferOptions(**values)
        if report is not None and not report.parent.is_dir():
            raise UsageError(f"--report directory {report.parent} does not exist")

        _import_backends()
        from .pipeline import transfer as run_transfer
        from .report import render_transfer

        result = run_transfer(opts, progress=sink.progress)
        sink.close()
        if not quiet:  # rendering (and importing Rich's tables) is ~50 ms nobody asked for under --quiet
            sink.show(*render_transfer(result))
        if json_mode or report is not None:
            data = result.to_dict()
            sink.result(data)
            if report is not None:
                _write_report(report, data)


def _write_report(path: Path, data: dict[str, Any]) -> None:
    try:
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write the report {path}: {exc.strerror or exc}") from None


@app.command()
def chain(
    model: Annotated[str, typer.Argument(help="timm name or package.module:callable.")],
    arg: Annotated[list[str] | None, typer.Option(metavar="KEY=VALUE", help="Constructor argument.")] = None,
    extractor: Annotated[str, typer.Option(help="auto | fx | exec")] = "auto",
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Show a model's longest chain of weight layers and why every other layer is off it."""
    sink = Output(json_mode=json_mode, quiet=quiet)
    with _errors(sink):
        from .options import parse_model_args

        if extractor not in ("auto", "fx", "exec"):
            raise UsageError(f"--extractor must be auto, fx or exec, got {extractor!r}")
        _import_backends()
        from .inspect import chain_report, render_chain

        data = chain_report(model, parse_model_args(arg, "--arg"), extractor)
        sink.show(*render_chain(data))
        sink.result(data)


@app.command()
def models(
    pattern: Annotated[str, typer.Argument(help="Substring or wildcard pattern, e.g. 'resnet*'.")] = "",
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Only names with pretrained weights.")] = False,
    limit: Annotated[int, typer.Option(help="Show at most this many (parameter counts are computed for these).")] = 50,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List or search timm model names, with parameter counts and pretrained tags."""
    sink = Output(json_mode=json_mode, quiet=quiet)
    with _errors(sink):
        if limit <= 0:
            raise UsageError(f"--limit must be positive, got {limit}")
        _import_backends()
        from .inspect import list_models, render_models

        data = list_models(pattern, pretrained, limit)
        sink.show(*render_models(data))
        sink.result(data)


@app.command()
def strategies(json_mode: JsonOpt = False) -> None:
    """List the transfer strategies."""
    from .match import STRATEGIES

    rows = [{"name": s.name, "summary": s.summary, "default": s.name == DEFAULT_STRATEGY} for s in STRATEGIES]
    sink = Output(json_mode=json_mode)
    if json_mode:
        sink.result(rows)
    else:
        for row in rows:
            mark = " (default)" if row["default"] else ""
            sink.err.print(f"[bold]{row['name']}[/bold]{mark}  {row['summary']}")


@app.command()
def demo(
    data: Annotated[Path | None, typer.Option(help="An .npz with 'images' (N,H,W[,C]) and 'labels' (N,). "
                                               "Default: scikit-learn's bundled digits (`.[demo]` extra).")] = None,
    src: Annotated[str, typer.Option(metavar="NAME", help="Source architecture to train.")] = "test_resnet",
    tgt: Annotated[str, typer.Option(metavar="NAME", help="Target architecture.")] = "test_efficientnet",
    strategy: Annotated[str, typer.Option(help="Transfer strategy.")] = DEFAULT_STRATEGY,
    shots: Annotated[int, typer.Option(help="Training images per target class.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for data split, init and training order.")] = 0,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Offline, ~1 minute on a CPU: train a source on half the classes, transfer, compare fine-tuning."""
    sink = Output(json_mode=json_mode, quiet=quiet)
    with _errors(sink):
        if shots <= 0:
            raise UsageError(f"--shots must be positive, got {shots}")
        _import_backends()
        from .demo import DemoConfig, run_demo
        from .report import render_transfer

        result = run_demo(DemoConfig(data=data, src=src, tgt=tgt, strategy=strategy, shots=shots, seed=seed),
                          log=lambda line: sink.show(line))
        sink.show(*render_transfer(result.report))
        sink.show(f"[bold]held-out accuracy of {tgt} after fine-tuning on {shots} images per class:[/bold] "
                  f"from scratch {result.scratch_acc:.1%}, from the transfer {result.transfer_acc:.1%} "
                  f"({100 * (result.transfer_acc - result.scratch_acc):+.1f} points; source {result.src_acc:.1%} "
                  f"on its own classes; {result.seconds:.0f} s)")
        sink.result({"src_acc": result.src_acc, "scratch_acc": result.scratch_acc,
                     "transfer_acc": result.transfer_acc, "seconds": result.seconds,
                     "report": result.report.to_dict()})


def _echo_version() -> None:
    from . import __version__

    typer.echo(__version__)


def _version_flag(value: bool) -> None:
    if value:
        _echo_version()
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version_flag, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    # `hmt --version` is what every CLI answers; the `version` command below stays for scripts that use it.
    pass


@app.command()
def version() -> None:
    """Print the hmt version."""
    _echo_version()


def main() -> None:
    """Console entry point: one-line usage errors instead of Click's multi-line panels."""
    try:
        code = app(standalone_mode=False)
    except Exception as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `hmt`: the help is the answer
            print(exc.format_message())  # type: ignore[attr-defined]
            sys.exit(0)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # typer's vendored Click errors
            command = " ".join(getattr(getattr(exc, "ctx", None), "command_path", "hmt").split())
            message = " ".join(exc.format_message().split())
            print(f"hmt: usage error: {message} (see `{command} --help`)", file=sys.stderr)
            sys.exit(int(exc.exit_code))
        raise
    # Everything allocated so far lives until exit: skip the final full collection (~1 s with torch).
    gc.freeze()
    sys.exit(code if isinstance(code, int) else 0)

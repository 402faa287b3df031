"""The ``hmt`` command line: flags -> options -> pipeline; errors -> one line and an exit code.

Thin by design: no torch/timm import at module level, so ``hmt --help`` and argument errors
answer in a fraction of a second. Each command imports its stage lazily.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import HmtError, Interrupted, UsageError
from .output import Output

__all__ = ["app", "main"]

DEBUG_ENV = "HMT_DEBUG"

app = typer.Typer(
    name="hmt",
    help="Heterogeneous model transfer: initialize any timm network from a pretrained network of a "
    "different architecture. Exit codes: see README (2 usage, 3 model, 4-5 weights, 6 model "
    "unsupported, 7 invalid values, 8 output, 130 interrupted).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@contextlib.contextmanager
def _errors(out: Output) -> Iterator[None]:
    """HmtError -> one line + its exit code; Ctrl-C -> 130; anything else -> 1 (bug)."""
    try:
        yield
    except HmtError as exc:
        out.close()
        if os.environ.get(DEBUG_ENV):
            raise
        out.error(exc)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        out.close()
        out.error(Interrupted("interrupted; nothing was written"))
        raise typer.Exit(Interrupted.exit_code) from None
    except typer.Exit:
        raise
    except Exception as exc:
        out.close()
        if os.environ.get(DEBUG_ENV):
            raise
        message = " ".join(str(exc).split())[:300]
        print(f"hmt: internal error: {type(exc).__name__}: {message} (rerun with {DEBUG_ENV}=1 for the "
              "traceback and report it)", file=sys.stderr)
        raise typer.Exit(1) from None
    finally:
        out.close()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON document on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No human report on stderr.")]


@app.command()
def transfer(
    src: Annotated[str | None, typer.Option(help="Source model: timm name or package.module:callable.")] = None,
    tgt: Annotated[str | None, typer.Option(help="Target model: timm name or package.module:callable.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output .safetensors (target state dict).")] = None,
    src_weights: Annotated[Path | None, typer.Option(
        help="Source checkpoint (.safetensors or torch file, loaded weights-only). Default: timm's pretrained "
        "weights (hub or cache).")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Target classifier size (default: timm's).")] = None,
    strategy: Annotated[str | None, typer.Option(help="Transfer strategy (see `hmt strategies`).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the target's own init (untransferred) [0].")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N]: where the math runs [auto].")] = None,
    dtype: Annotated[str | None, typer.Option(help="Output dtype: float32 | float16 | bfloat16 [source's].")] = None,
    src_arg: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the source's constructor.")] = None,
    tgt_arg: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the target's constructor.")] = None,
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
                 "strategy": strategy, "seed": seed, "device": device, "dtype": dtype}
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

        from .pipeline import transfer as run_transfer
        from .report import render_transfer

        result = run_transfer(opts, progress=sink.progress)
        sink.close()
        sink.show(*render_transfer(result))
        data = result.to_dict()
        sink.result(data)
        if report is not None:
            report.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


@app.command()
def chain(
    model: Annotated[str, typer.Argument(help="timm name or package.module:callable.")],
    arg: Annotated[list[str] | None, typer.Option(help="KEY=VALUE constructor argument (repeatable).")] = None,
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
        from .inspect import list_models, render_models

        data = list_models(pattern, pretrained, limit)
        sink.show(*render_models(data))
        sink.result(data)


@app.command()
def strategies(json_mode: JsonOpt = False) -> None:
    """List the transfer strategies."""
    from .match import STRATEGIES

    rows = [{"name": s.name, "summary": s.summary} for s in STRATEGIES]
    sink = Output(json_mode=json_mode)
    if json_mode:
        sink.result(rows)
    else:
        for row in rows:
            sink.err.print(f"[bold]{row['name']}[/bold]  {row['summary']}")


@app.command()
def version() -> None:
    """Print the hmt version."""
    from . import __version__

    typer.echo(__version__)


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
    sys.exit(code if isinstance(code, int) else 0)

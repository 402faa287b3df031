"""``TransferReport``: what a transfer did (or would do), as a Rich table or a JSON-ready dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import groupby
from typing import Any

__all__ = ["LayerRow", "TransferReport", "render_transfer", "rules_text"]


@dataclass(frozen=True)
class LayerRow:
    index: int
    tgt_layer: str
    tgt_kind: str
    tgt_shape: tuple[int, ...]
    src_layer: str | None
    src_kind: str | None
    src_shape: tuple[int, ...] | None
    rules: tuple[str, ...]  # e.g. ("paper", "cyclic") for weight and bias; () = kept at init
    note: str = ""


@dataclass(frozen=True)
class TransferReport:
    src: str
    tgt: str
    strategy: str
    seed: int
    device: str
    dtype: str
    src_weights: str  # sha256:..., hub:org/repo, or "none (dry run)"
    src_extractor: str
    tgt_extractor: str
    src_chain_len: int
    tgt_chain_len: int
    layers_transferred: int
    params_written: int
    params_total: int
    tensors_written: int
    tensors_total: int
    rows: tuple[LayerRow, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    out: str | None = None
    dry_run: bool = False
    seconds: float = 0.0
    warnings: tuple[str, ...] = field(default_factory=tuple)
    tensors: tuple[dict[str, Any], ...] = ()  # every target tensor: transferred (src, rule) or init (why)
    coverage: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> params, written
    signal: tuple[Any, ...] = ()  # health.LayerSignal per checked chain layer
    fallback: tuple[str, ...] = ()  # layers reverted to init by the signal check
    # Elements of the written params that hold source values (None on a dry run): a tensor written from a
    # narrower source (centre crop/pad) keeps the target's init around the source's slice.
    params_from_source: int | None = None
    strategy_note: str = ""  # a choice the strategy made for this pair of networks

    @property
    def frac_params_written(self) -> float:
        return self.params_written / self.params_total if self.params_total else 0.0

    @property
    def frac_params_from_source(self) -> float | None:
        if self.params_from_source is None:
            return None
        return self.params_from_source / self.params_total if self.params_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["frac_params_written"] = round(self.frac_params_written, 6)
        frac = self.frac_params_from_source
        data["frac_params_from_source"] = None if frac is None else round(frac, 6)
        data["rows"] = [asdict(r) for r in self.rows]
        data["tensors"] = list(self.tensors)
        data["skipped"] = [{"tgt_key": k, "reason": why} for k, why in self.skipped]
        data["signal"] = [asdict(s) for s in self.signal]
        return data


def _shape(shape: tuple[int, ...] | None) -> str:
    return "" if shape is None else "x".join(str(s) for s in shape)


def _signal_cell(s: Any) -> str:
    """Output std relative to the target's own init on a noise batch; red when flagged."""
    if s is None:
        return "[dim]-[/dim]"
    text = f"{s.ratio:.2g}x"
    if s.status != "ok":
        return f"[red]{text} {s.status}[/red]"
    return text if s.after == "ok" else f"[red]{text}, {s.after} after[/red]"  # its norm/activation broke it


def rules_text(rules: tuple[str, ...]) -> str:
    """``("centre",) * 6`` -> ``centre x6``; ``("paper", "cyclic")`` -> ``paper+cyclic``: one tensor rule per
    written tensor (weight, bias, norm tensors), runs of one rule counted so the column stays narrow."""
    runs = [(rule, len(list(group))) for rule, group in groupby(rules)]
    return "+".join(rule if n == 1 else f"{rule} x{n}" for rule, n in runs)


def render_transfer(report: TransferReport) -> list[Any]:
    """Rich renderables: the layer table, then a summary grid."""
    from rich.table import Table

    table = Table(title=f"hmt transfer: {report.src} -> {report.tgt} ({report.strategy})", title_justify="left")
    signal = {s.path: s for s in report.signal}
    columns = [("#", "right"), ("target layer", "left"), ("kind", "left"), ("shape", "right"),
               ("source layer", "left"), ("shape", "right"), ("rule", "left")]
    if signal:
        columns.append(("signal", "right"))
    for column, justify in columns:
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in report.rows:
        if row.rules:
            rule = rules_text(row.rules) + (f" [dim]({row.note})[/dim]" if row.note else "")
        else:
            rule = f"[dim]init{': ' + row.note if row.note else ''}[/dim]"
        if row.tgt_layer in report.fallback:
            rule = f"[red]init (signal fallback)[/red] [dim]{rule}[/dim]"
        cells = [str(row.index), row.tgt_layer, row.tgt_kind, _shape(row.tgt_shape),
                 row.src_layer or "[dim]-[/dim]", _shape(row.src_shape), rule]
        if signal:
            cells.append(_signal_cell(signal.get(row.tgt_layer)))
        table.add_row(*cells)
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    if report.strategy_note:
        summary.add_row("strategy", f"{report.strategy}: {report.strategy_note}")
    summary.add_row("chains", f"source {report.src_chain_len} layers ({report.src_extractor}), "
                              f"target {report.tgt_chain_len} layers ({report.tgt_extractor})")
    summary.add_row("transferred", f"{report.layers_transferred} layers, {report.tensors_written} of "
                                   f"{report.tensors_total} tensors")
    summary.add_row("params written", f"{report.params_written:,} of {report.params_total:,} "
                                      f"({100 * report.frac_params_written:.1f}%); the rest keeps the "
                                      f"target's init (seed {report.seed})")
    from_source, frac = report.params_from_source, report.frac_params_from_source
    if from_source is not None and frac is not None and from_source < report.params_written:
        summary.add_row("source values", f"{from_source:,} of the written "
                                         f"({100 * frac:.1f}% of all); a "
                                         "tensor wider than its source keeps its init around the source's slice")
    if report.coverage:
        parts = [f"{role} {v['written'] / v['params']:.0%} of {v['params']:,}"
                 for role, v in sorted(report.coverage.items(), key=lambda kv: -kv[1]["params"]) if v["params"]]
        summary.add_row("coverage by role", "; ".join(parts))
    summary.add_row("source weights", report.src_weights)
    summary.add_row("device / dtype", f"{report.device} / {report.dtype}")
    if report.signal:
        flagged = sum(1 for s in report.signal if s.flagged)
        summary.add_row("signal check", f"{len(report.signal)} chain layers checked on a noise batch, "
                                        f"{flagged} flagged, {len(report.fallback)} fell back to init")
    if report.skipped:
        summary.add_row("skipped", f"{len(report.skipped)} tensors (rule could not apply; see --json)")
    for warning in report.warnings:
        summary.add_row("[yellow]warning[/yellow]", warning)
    summary.add_row("output", "dry run: nothing written" if report.dry_run else str(report.out))
    summary.add_row("time", f"{report.seconds:.2f} s")
    return [table, summary]

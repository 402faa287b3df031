"""``hmt chain`` and ``hmt models``: read-only views of the graph stage and of timm's registry."""

from __future__ import annotations

from collections import Counter
from math import prod
from typing import Any

__all__ = ["chain_report", "render_chain", "list_models", "render_models"]


def chain_report(model: str, kwargs: dict[str, Any], extractor: str = "auto") -> dict[str, Any]:
    """The chain, the off-chain layers with reasons, and a parameter account (JSON-ready)."""
    from .chain import account, find_chain
    from .graph import extract_graph
    from .models import build_model, resolve_model

    spec = resolve_model(model, kwargs)
    module = build_model(spec, device="meta")
    graph = extract_graph(module, model, extractor)
    chain = find_chain(graph)
    owners = account(graph, chain)
    params = {n: prod(p.shape) for n, p in module.named_parameters()}
    by_owner: Counter[str] = Counter()
    for key, numel in params.items():
        by_owner[owners.get(key, "unaccounted")] += numel
    total = sum(params.values())
    return {
        "model": model,
        "extractor": graph.extractor,
        "guesses": graph.guesses,
        "seconds": round(graph.seconds, 4),
        "input_shape": list(graph.input_shape),
        "chain": [
            {"index": i, "path": n.path, "kind": n.kind, "shape": list(n.shape), "stride": list(n.stride),
             "reduction": n.reduction, "norm": n.norm}
            for i, n in enumerate(chain.layers)
        ],
        "off_chain": [{"path": o.path, "reason": o.reason, "numel": o.numel} for o in chain.off_chain],
        "off_chain_counts": dict(sorted(Counter(o.reason for o in chain.off_chain).items())),
        "params": {"total": total, "by_owner": dict(sorted(by_owner.items())),
                   "accounted": 1 - by_owner["unaccounted"] / total if total else 1.0},
    }


def render_chain(data: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    how = data["extractor"]
    if data.get("guesses"):
        how += f", {data['guesses']} data-dependent value(s) guessed"
    table = Table(title=f"{data['model']}: chain of {len(data['chain'])} layers ({how}, "
                        f"{1000 * data['seconds']:.0f} ms)", title_justify="left")
    for column in ("#", "layer", "kind", "weight shape", "stride", "stage (/N)", "norm"):
        table.add_column(column)
    for row in data["chain"]:
        table.add_row(str(row["index"]), row["path"], row["kind"], "x".join(map(str, row["shape"])),
                      "x".join(map(str, row["stride"])) or "-", str(row["reduction"]), row["norm"] or "-")
    counts = ", ".join(f"{k} {v}" for k, v in data["off_chain_counts"].items())
    off = Table(title=f"off-chain layers: {counts}", title_justify="left")
    for column in ("layer", "reason", "params"):
        off.add_column(column)
    for row in data["off_chain"]:
        off.add_row(row["path"], row["reason"], f"{row['numel']:,}")
    params = data["params"]
    owners = ", ".join(f"{k} {v:,}" for k, v in params["by_owner"].items())
    summary = f"parameters: {params['total']:,} ({100 * params['accounted']:.1f}% accounted: {owners})"
    return [table, off, summary] if data["off_chain"] else [table, summary]


def _pattern(pattern: str) -> str:
    if not pattern:
        return "*"
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def list_models(pattern: str, pretrained_only: bool, limit: int) -> dict[str, Any]:
    import timm
    import torch

    glob = _pattern(pattern)
    names = timm.list_models(glob)
    tags: dict[str, list[str]] = {}
    for full in timm.list_pretrained():
        arch, _, tag = full.partition(".")
        tags.setdefault(arch, []).append(tag)
    if pretrained_only:
        names = [n for n in names if n in tags]
    rows = []
    for name in names[:limit]:
        try:
            with torch.device("meta"):
                model = timm.create_model(name)
            params: int | None = sum(p.numel() for p in model.parameters())
        except Exception:  # a name that cannot build on meta still lists, without a count
            params = None
        rows.append({"name": name, "params": params, "pretrained_tags": tags.get(name, [])})
    return {"pattern": glob, "matches": len(names), "shown": len(rows), "models": rows}


def render_models(data: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    table = Table(title=f"timm models matching {data['pattern']!r}: {data['matches']} "
                        f"(showing {data['shown']})", title_justify="left")
    for column, justify in (("name", "left"), ("params", "right"), ("pretrained tags", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in data["models"]:
        params = "?" if row["params"] is None else f"{row['params'] / 1e6:.1f}M"
        shown_tags = ", ".join(row["pretrained_tags"][:3]) + (" ..." if len(row["pretrained_tags"]) > 3 else "")
        table.add_row(row["name"], params, shown_tags or "[dim]none[/dim]")
    return [table]



"""``transfer(options) -> TransferReport``: the one function the CLI (and the benchmarks) call.

Stages: resolve names -> open source weights (lazily) -> build both models on the meta device ->
graph -> chain -> plan (names and shapes only) -> materialize the target once (seeded init) ->
apply -> write atomically. Everything before ``apply`` touches no tensor data, so ``--dry-run``
and every user error return before the expensive part.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from itertools import pairwise
from math import prod
from typing import TYPE_CHECKING

from . import __version__
from .errors import UsageError, WeightsMismatch
from .options import TransferOptions

if TYPE_CHECKING:
    import torch

    from .chain import Chain
    from .graph import LayerGraph
    from .health import Reference
    from .io import WeightSource
    from .models import ModelSpec
    from .plan import TransferPlan
    from .report import TransferReport

__all__ = ["transfer", "analyze", "Analysis", "METADATA_KEY"]

METADATA_KEY = "hmt"  # one key holding sorted JSON: safetensors reorders multiple keys run to run


@dataclass(frozen=True)
class Analysis:
    """A model traced on the meta device: its graph, chain and parameter names."""

    graph: LayerGraph
    chain: Chain
    param_keys: frozenset[str]


def analyze(name: str, kwargs: dict | None = None, num_classes: int | None = None) -> Analysis:
    """Name -> meta-device model -> graph -> chain (what ``hmt chain`` shows)."""
    from .cache import cached
    from .chain import find_chain
    from .graph import extract_graph
    from .models import build_model, resolve_model

    spec = resolve_model(name, kwargs)

    def compute() -> tuple[LayerGraph, Chain, frozenset[str]]:
        model = build_model(spec, device="meta", num_classes=num_classes)
        graph = extract_graph(model, name)
        return graph, find_chain(graph), frozenset(n for n, _ in model.named_parameters())

    graph, chain, params = cached(_model_key(spec, "analysis", num_classes=num_classes), compute)
    return Analysis(graph, chain, params)


def _model_key(spec: ModelSpec, kind: str, **parts: object) -> str | None:
    """The cache key of something computed from a model, or ``None`` (not cached) for anything but a
    timm registry name: a factory's code or a hub config can change behind the same name."""
    from .cache import cache_key

    if not spec.is_timm or ":" in spec.name:
        return None
    return cache_key(kind=kind, model=spec.name, kwargs=dict(spec.kwargs), **parts)


# `--device auto` moves the arithmetic to CUDA only for plans too big for the CPU to win. The stage is
# memory-bound and runs on one CPU thread (apply.py); the source is read from the page cache on the CPU
# side either way. Measured on an H200 host (docs/speed.md, "CUDA vs CPU"), the stage alone: 0.05 s on
# CPU vs 0.11 s on CUDA for resnet50 -> mobilenetv3 (5M elements written), 0.26 vs 0.20 s for
# vit_large -> vit_base (86M), 1.47 vs 1.03 s for vit_huge -> vit_large (300M). CUDA saves ~1.5 ms per
# million elements and its context costs about a second to start, so it pays from about 700M: the
# threshold is a billion, a margin for the measurement's two points.
AUTO_CUDA_ELEMENTS = 1_000_000_000


def _device(name: str, elements: int = 0) -> torch.device:
    """The device of ``--device name``; ``auto`` is CUDA (when present) only for a plan that writes at least
    ``AUTO_CUDA_ELEMENTS`` target elements (``elements``; 0 before planning)."""
    import torch

    if name == "auto":
        big = elements >= AUTO_CUDA_ELEMENTS
        return torch.device("cuda" if big and torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was requested but no CUDA device is available", hint="use --device cpu")
    return torch.device(name)


def _check_weights(source: WeightSource, src: Analysis, src_name: str, head: bool = False) -> list[str]:
    """Source file vs source model: fail on missing or mismatched non-head tensors (head ones too when
    ``head``: ``--head transfer`` reads them)."""
    head_paths = {src.graph.layers[i].path for i in src.graph.head}
    expected = {k: v for k, v in src.graph.param_shapes.items() if not k.endswith("num_batches_tracked")}
    have = set(source.keys())

    def is_head(key: str) -> bool:
        return key.rsplit(".", 1)[0] in head_paths

    missing = [k for k in expected if k not in have and not is_head(k)]
    unexpected = [k for k in have if k not in src.graph.param_shapes]
    mismatched = [
        k for k in expected if k in have and not is_head(k) and tuple(source.shape(k)) != tuple(expected[k])
    ]
    if missing or mismatched:
        example = (missing or mismatched)[0]
        detail = (f"e.g. {example}: file {tuple(source.shape(example))} vs model {expected[example]}"
                  if example in have else f"e.g. {example} is missing")
        raise WeightsMismatch(
            f"the weights are not a {src_name} checkpoint: {len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(mismatched)} mismatched keys ({detail})",
            hint="check --src, --src-arg (e.g. num_classes) and --src-weights",
        )
    if head:
        _check_head_weights(source, src)
    if unexpected:
        return [f"{len(unexpected)} tensors in the weights file are not in {src_name} and were ignored"]
    return []


def _check_heads(src: Analysis, tgt: Analysis) -> None:
    """``--head transfer`` only between classifiers of one label space."""
    from .plan import head_layers

    s, t = head_layers(src.graph), head_layers(tgt.graph)
    if not s or not t:
        raise UsageError(f"--head transfer: the {'source' if not s else 'target'} has no classifier head",
                         hint="use --head init")
    if len(s) != len(t):
        raise UsageError(f"--head transfer: the source head has {len(s)} layers, the target's {len(t)}",
                         hint="use --head init")
    if s[-1].shape[0] != t[-1].shape[0]:
        raise UsageError(f"--head transfer needs one label space: the source classifier has {s[-1].shape[0]} "
                         f"outputs, the target's {t[-1].shape[0]}",
                         hint="make them match with --num-classes or --src-arg num_classes=N, or use --head init")


def _check_head_weights(source: WeightSource, src: Analysis) -> None:
    """The file holds the source model's head, as ``--head transfer`` will read it."""
    from .plan import head_layers

    have = set(source.keys())
    for node in head_layers(src.graph):
        for key in filter(None, (node.weight, node.bias)):
            expected = tuple(src.graph.param_shapes[key])
            found = tuple(source.shape(key)) if key in have else None
            if found != expected:
                raise WeightsMismatch(f"--head transfer: the weights file's {key} is "
                                      f"{'missing' if found is None else found}, the source model's head {expected}",
                                      hint="check --src-arg num_classes=..., or use --head init")


def _rows(plan: TransferPlan) -> tuple:
    from .report import LayerRow

    rules: dict[str, list[str]] = {}
    for op in plan.ops:
        rules.setdefault(op.tgt_layer, []).append(op.rule)
    rows = []
    for i, pair in enumerate(plan.pairs):
        t, s = pair.tgt, pair.src
        rows.append(LayerRow(i, t.path, t.kind, t.shape, s.path if s else None, s.kind if s else None,
                             s.shape if s else None, tuple(rules.get(t.path, ())), pair.note))
    return tuple(rows)


_INIT_REASONS = {
    "chain": "chain layer tensor the strategy does not write (bias, norm, running statistics)",
    "head": "classifier head: fresh for the new label space",
    "gate": "gate branch without a source counterpart",
    "shortcut": "shortcut without a source counterpart",
    "branch": "off-chain branch",
    "dead-end": "off-chain dead end",
    "norm": "normalization not attached to a transferred layer",
    "embedding": "embedding / table without a source counterpart",
    "scale": "per-channel scale (e.g. layer scale)",
    "unused": "not used in the forward pass",
}


def _accounting(tgt: Analysis, plan: TransferPlan, kept: set[str]) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """Every target tensor: written by which op, or left at init and why; coverage by role."""
    from .chain import account

    owners = account(tgt.graph, tgt.chain)
    by_key = {op.tgt_key: op for op in plan.ops if op.tgt_key not in kept}
    rows: list[dict] = []
    coverage: dict[str, dict[str, int]] = {}
    for key, shape in tgt.graph.param_shapes.items():
        role = owners.get(key, "unused")
        op = by_key.get(key)
        if op is not None:
            rows.append({"key": key, "status": "transferred", "src": op.src_key, "rule": op.rule, "scale": op.scale})
        else:
            why = "reverted by rescaling or the signal check" if key in kept else _INIT_REASONS.get(role, role)
            rows.append({"key": key, "status": "init", "role": role, "reason": why})
        if key in tgt.param_keys:
            entry = coverage.setdefault(role, {"params": 0, "written": 0})
            entry["params"] += prod(shape)
            entry["written"] += prod(shape) if op is not None else 0
    return rows, coverage


def _written(tgt: Analysis, plan: TransferPlan, kept: set[str], from_source: Mapping[str, int] | None = None
             ) -> dict:
    """The report's counts of what the transfer wrote, given the keys that ended at init anyway, and
    (after a real transfer) how many elements of each written key hold source values."""
    ops = [op for op in plan.ops if op.tgt_key not in kept]
    rows, coverage = _accounting(tgt, plan, kept)
    return {
        "params_written": sum(prod(op.tgt_shape) for op in ops if op.tgt_key in tgt.param_keys),
        "params_from_source": None if from_source is None else sum(
            from_source.get(op.tgt_key, 0) for op in ops if op.tgt_key in tgt.param_keys),
        "tensors_written": len(ops),
        "layers_transferred": len({op.tgt_layer for op in ops}),
        "tensors": tuple(rows),
        "coverage": coverage,
    }


def _metadata(opts: TransferOptions, identity: str, plan: TransferPlan, dtype: str) -> dict[str, str]:
    info = {
        "hmt_version": __version__,
        "src": opts.src,
        "tgt": opts.tgt,
        "src_weights": identity,
        "src_kwargs": dict(opts.src_kwargs),
        "tgt_kwargs": dict(opts.tgt_kwargs),
        "num_classes": opts.num_classes,
        "strategy": opts.strategy,
        "head": opts.head,
        "seed": opts.seed,
        "dtype": dtype,
        "mapping": plan.mapping(),
    }
    return {METADATA_KEY: json.dumps(info, sort_keys=True, separators=(",", ":"), default=str)}


def transfer(opts: TransferOptions, progress: Callable[[str, int, int], None] | None = None) -> TransferReport:
    """Run (or, with ``dry_run``, plan) one transfer; raises :class:`~hmt_cli.errors.HmtError` on user errors."""
    start = time.perf_counter()
    import torch

    from .apply import apply_plan
    from .health import reference_sizes, region_keys, rescale
    from .hub import load_pretrained
    from .io import check_output_path, open_weights, write_safetensors
    from .match import get_strategy
    from .models import resolve_model
    from .plan import make_plan
    from .report import TransferReport

    # Cheap checks first: a typo must not cost a model build.
    src_spec = resolve_model(opts.src, opts.src_kwargs)
    tgt_spec = resolve_model(opts.tgt, opts.tgt_kwargs)
    strategy = get_strategy(opts.strategy)
    _device(opts.device)  # an unavailable --device cuda fails here, before any model is traced
    if not opts.dry_run:
        assert opts.out is not None
        check_output_path(opts.out, opts.force, (opts.src_weights,) if opts.src_weights else ())
    source = open_weights(opts.src_weights) if opts.src_weights else None
    if source is None and not opts.dry_run:
        from .hub import ensure_available

        ensure_available(src_spec)  # offline without a cache: fail now, not after tracing both models

    src = analyze(opts.src, dict(opts.src_kwargs))
    tgt = analyze(opts.tgt, dict(opts.tgt_kwargs), num_classes=opts.num_classes)
    head = opts.head == "transfer"
    if head:
        _check_heads(src, tgt)
    warnings = _check_weights(source, src, opts.src, head) if source else []
    plan = make_plan(strategy, src.graph, src.chain, tgt.graph, tgt.chain, head=head)
    device = _device(opts.device, sum(prod(op.tgt_shape) for op in plan.ops))

    param_total = sum(prod(tgt.graph.param_shapes[k]) for k in tgt.param_keys)
    tensors_total = sum(1 for k in tgt.graph.param_shapes if not k.endswith("num_batches_tracked"))
    common = dict(
        src=opts.src, tgt=opts.tgt, strategy=strategy.name, seed=opts.seed, device=str(device),
        src_extractor=src.graph.extractor, tgt_extractor=tgt.graph.extractor,
        src_chain_len=len(src.chain), tgt_chain_len=len(tgt.chain), params_total=param_total,
        tensors_total=tensors_total, rows=_rows(plan), skipped=plan.skipped, strategy_note=plan.note,
    )
    if opts.dry_run:
        identity = source.identity if source else "not read (dry run)"
        return TransferReport(**common, **_written(tgt, plan, set()), dtype=opts.dtype or "source",
                              src_weights=identity, dry_run=True,
                              seconds=time.perf_counter() - start, warnings=tuple(warnings))

    if source is None:
        source = load_pretrained(src_spec)
        warnings += _check_weights(source, src, opts.src, head)
    dtype = getattr(torch, opts.dtype) if opts.dtype else (source.float_dtype() or torch.float32)
    # The target's own init for every tensor the plan does not write. Apply writes into these same
    # tensors, so the init is never kept beside the result (peak memory: one target, not two); what
    # needs it is measured first, and the rare revert rebuilds it (`_InitValues`).
    init = _InitValues(tgt_spec, opts.num_classes, opts.seed)
    model = init.build()
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    policy = opts.signal_check or strategy.signal_policy
    paths = [n.path for n in tgt.chain.layers]
    ref = _init_reference(tgt_spec, opts.num_classes, opts.seed, model, paths, tgt.graph.input_shape) \
        if policy != "off" else None
    if ref is None:
        model = None  # with another output dtype, the state holds copies: let the float32 model go
    sizes = reference_sizes(plan, state)
    report_progress = (lambda step: progress("transfer", step, len(plan.ops))) if progress else None
    written = apply_plan(plan, source, state, device, report_progress, keep_regions=region_keys(plan))
    reverted = rescale(plan, sizes, state, written.regions)
    init.restore(state, reverted)
    signals, fallback = _signal(policy, model, state, ref, plan, tgt, paths, init) if ref is not None else ([], [])
    del model
    if reverted:
        warnings.append(f"{len(reverted)} tensors kept their init (zero-variance init or result)")
    if fallback:
        warnings.append(f"signal check: {len(fallback)} layers fell back to the target's init: "
                        + ", ".join(fallback[:5]) + (" ..." if len(fallback) > 5 else ""))
    kept = set(reverted) | {op.tgt_key for op in plan.ops if op.tgt_layer in fallback}
    identity = source.identity
    assert opts.out is not None
    write_safetensors(state, opts.out, _metadata(opts, identity, plan, str(dtype).removeprefix("torch.")))
    return TransferReport(**common, **_written(tgt, plan, kept, written.from_source),
                          dtype=str(dtype).removeprefix("torch."), src_weights=identity,
                          out=str(opts.out), seconds=time.perf_counter() - start, warnings=tuple(warnings),
                          signal=tuple(signals), fallback=tuple(fallback))


class _InitValues:
    """The target's seeded timm init: built once for the transfer, rebuilt only to revert tensors."""

    def __init__(self, spec: ModelSpec, num_classes: int | None, seed: int) -> None:
        self.spec, self.num_classes, self.seed = spec, num_classes, seed

    def build(self) -> torch.nn.Module:
        import torch

        from .models import build_model

        torch.manual_seed(self.seed)
        return build_model(self.spec, device="cpu", num_classes=self.num_classes)

    def restore(self, state: dict[str, torch.Tensor], keys: Collection[str]) -> None:
        """Put the init back into ``keys`` of ``state``, in place (same seed, same build: the same values)."""
        if not keys:
            return
        fresh = self.build().state_dict()
        for key in keys:
            value = fresh[key].to(state[key].dtype) if fresh[key].is_floating_point() else fresh[key]
            state[key].copy_(value)


def _init_reference(spec: ModelSpec, num_classes: int | None, seed: int, model: torch.nn.Module,
                    paths: list[str], input_shape: tuple[int, ...]) -> Reference:
    """The signal check's measurement of the target's own init, cached like an analysis.

    It is a pure function of the model's registry name, arguments, head size and seed (the init and
    the noise batch are both seeded), and one forward pass is ~30 ms for a small CNN and ~0.8 s for a
    ViT-L on 2 cores. The noise batch is regenerated from its shape and the seed, not stored.
    """
    from .cache import cached
    from .health import Reference, noise, reference

    def compute() -> dict:
        ref = reference(model, paths, input_shape, seed)
        return {"shape": tuple(ref.x.shape), "small": ref.small, "stds": dict(ref.stds)}

    entry = cached(_model_key(spec, "reference", num_classes=num_classes, seed=seed), compute)
    return Reference(noise(entry["shape"], seed), entry["stds"], entry["small"])


def _direct_inputs(tgt: Analysis) -> frozenset[str]:
    """Chain layers fed by the previous chain layer through norms and activations only (no residual add,
    concat or product on the way): only there does a broken input belong to the previous layer."""
    plain = {(e.src, e.dst) for e in tgt.graph.edges if not e.merge and not e.gated}
    layers = tgt.chain.layers
    return frozenset(b.path for a, b in pairwise(layers) if (a.index, b.index) in plain)


def _signal(policy: str, model: torch.nn.Module, state: dict, ref: Reference, plan: TransferPlan, tgt: Analysis,
            paths: list[str], init: _InitValues) -> tuple[list, list[str]]:
    """Run the data-free check; under ``fallback`` revert flagged layers to init (3 rounds at most)."""
    from .errors import InvalidValues
    from .health import check

    direct = _direct_inputs(tgt)
    fallback: list[str] = []
    for _ in range(3):
        signals = check(model, state, paths, tgt.graph.input_shape, init.seed, direct, ref)
        bad = [s.path for s in signals if s.flagged]
        if policy != "fallback" or not bad:
            return signals, fallback
        init.restore(state, [op.tgt_key for op in plan.ops if op.tgt_layer in bad])
        fallback += [b for b in bad if b not in fallback]
    if any("nonfinite" in (s.status, s.after) for s in signals):
        raise InvalidValues("the transferred target still produces NaN/Inf after falling back to init",
                            hint="try --strategy paper or report this pair")
    return signals, fallback


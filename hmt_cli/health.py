"""Signal health: init-scale rescaling (by construction) and a data-free forward check (by test).

``rescale``: an op marked ``scale="init_std"`` gets its result multiplied so that its standard
deviation equals the target's own init of that tensor. timm's inits are chosen so that each
architecture trains from them; keeping their per-tensor scale while taking the source's pattern
avoids the failure mode of copied weights whose scale kills or explodes the signal.

``check``: one fixed noise batch through the target twice, at its own init and transferred (via
``torch.func.functional_call``, no weight copies), BatchNorms on batch statistics as fine-tuning
starts, recording every chain layer's input and output std. A layer is flagged when its *local*
gain relative to init (its output ratio divided by its input's ratio) collapses (< 1e-2), explodes
(> 1e2) or turns non-finite, and flagged ``after`` when the signal breaks between its output and the
next chain layer's input (its norm or activation): the blame lands where the signal first breaks,
so one bad layer early on does not flag everything after it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from .plan import TransferPlan

__all__ = ["LayerSignal", "Reference", "rescale", "reference_sizes", "region_keys", "reference", "noise", "check",
           "channel_std", "COLLAPSE", "EXPLODE"]

COLLAPSE, EXPLODE = 1e-2, 1e2
CHECK_SIZE = 64  # spatial size of the noise batch for models that accept any size


@dataclass(frozen=True)
class LayerSignal:
    path: str
    init_std: float
    std: float
    ratio: float  # std / init_std
    gain: float  # ratio / the ratio of this layer's input: the layer's own effect
    status: str  # ok | collapsed | exploded | nonfinite
    # What breaks the signal between this layer's output and the next chain layer's input (its norm,
    # activation, a gate) is this layer's doing too: a zero-gain norm carried over from the source
    # shows as a dead *input* downstream, and reverting this layer (with its norm) is the fix.
    after: str = "ok"

    @property
    def flagged(self) -> bool:
        return self.status != "ok" or self.after != "ok"


def _std(t: torch.Tensor) -> float:
    return float(t.float().std()) if t.numel() > 1 else 0.0


# Scale kinds measured against the init, by this. The init's size is always its whole tensor's std.
_MEASURES = {"init_std": _std, "init_std_up": _std, "init_std_up_written": _std}
# Scale kinds that only ever scale up, by how the measured factor becomes the applied one.
def _up_only(factor: float) -> float:
    return max(factor, 1.0)


_UP: dict[str, Callable[[float], float]] = {"init_std_up": _up_only, "init_std_up_written": _up_only}
# Scale kinds measured on, and applied to, only the elements the rule wrote from the source (and the
# followers of their layers likewise): where a narrow source fills a slice of a wider tensor, the rest
# is the target's own init, already at its scale, and would otherwise dominate the measured std.
_WRITTEN = {"init_std_up_written"}
# Scale kinds measured on the written region but applied to more of the tensor, by how the measured region
# becomes the applied one. None shipped; it is the hook a benchmark variant registers its kind in, as in
# ``_UP`` (benchmarks/variants/rows.py: whole output channels).
_APPLIED: dict[str, Callable[[tuple[slice, ...]], tuple[slice, ...]]] = {}
_FOLLOWERS = {"layer"}  # scale kinds that reuse their layer's factor


def reference_sizes(plan: TransferPlan, state: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The size (std) of each rescaled tensor's init: call before ``apply``."""
    return {op.tgt_key: _MEASURES[op.scale](state[op.tgt_key]) for op in plan.ops if op.scale in _MEASURES}


def region_keys(plan: TransferPlan) -> set[str]:
    """The keys whose written region :func:`rescale` needs (``apply_plan``'s ``keep_regions``)."""
    layers = {op.tgt_layer for op in plan.ops if op.scale in _WRITTEN}
    return {op.tgt_key for op in plan.ops
            if op.scale in _WRITTEN or (op.scale in _FOLLOWERS and op.tgt_layer in layers)}


def _multiply(tensor: torch.Tensor, factor: float, region: tuple[slice, ...] | None) -> None:
    """In place (the tensor may be the model's own parameter); only in ``region``, if given."""
    part = tensor if region is None else tensor[region]  # a view: writing it writes the tensor
    part.copy_(part.float() * factor)


def rescale(plan: TransferPlan, sizes: Mapping[str, float], state: MutableMapping[str, torch.Tensor],
            regions: Mapping[str, tuple[slice, ...]] | None = None) -> list[str]:
    """Apply every op's ``scale`` in place; returns the keys that must go back to the target's init.

    ``init_std`` (weights): match the std of the target's own init (``sizes``, from
    :func:`reference_sizes`); ``init_std_up``: the same, but only ever up (a result above the init's
    std keeps its scale); ``init_std_up_written``: as ``init_std_up``, measured on and applied to only
    the elements the source wrote (``regions``, from ``apply_plan``; the whole tensor without one).
    ``layer``: the factor that the same target layer's measured op got, for a tensor that must move
    with a weight (its bias) to keep the layer's function, on its written elements too if the layer's
    op was measured on its own. A zero init (zero-init residual branches) is deliberate and kept, as is
    a zero result: those keys, and the keys that follow their factor, are returned, and left for the
    caller to revert.
    """
    regions = regions or {}
    revert: list[str] = []
    factors: dict[str, float | None] = {}  # target layer -> the factor of its measured op
    on_written: set[str] = set()  # target layers whose factor applies to the written elements only
    for op in (op for op in plan.ops if op.scale in _MEASURES):
        out = state[op.tgt_key]
        region = regions.get(op.tgt_key) if op.scale in _WRITTEN else None
        ref_size, out_size = sizes[op.tgt_key], _MEASURES[op.scale](out if region is None else out[region])
        ok = ref_size > 0.0 and out_size > 0.0 and math.isfinite(out_size)
        factor = ref_size / out_size if ok else None
        if factor is not None and op.scale in _UP:
            factor = _UP[op.scale](factor)
        factors[op.tgt_layer] = factor
        if op.scale in _WRITTEN:
            on_written.add(op.tgt_layer)
        if factor is None:
            revert.append(op.tgt_key)
        else:
            _multiply(out, factor, region if region is None or op.scale not in _APPLIED else _APPLIED[op.scale](region))
    for op in (op for op in plan.ops if op.scale in _FOLLOWERS):
        factor = factors.get(op.tgt_layer)
        if factor is None:
            revert.append(op.tgt_key)
        else:
            _multiply(state[op.tgt_key], factor, regions.get(op.tgt_key) if op.tgt_layer in on_written else None)
    return revert


def channel_std(out: torch.Tensor) -> float:
    """Mean over channels of each channel's std across samples and positions.

    A layer whose output no longer depends on its input (e.g. a norm gain near zero leaving only
    its bias) has per-channel std ~0 even though the tensor's overall std, dominated by the
    differences *between* channels, looks healthy. NaN/Inf anywhere make the result non-finite.
    """
    x = out.float()
    # (N, C, H, W): channels second; (N, C) and token layouts (N, T, C): channels last.
    x = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() == 4 else x.reshape(-1, x.shape[-1]).t()
    n = x.shape[1]
    if n < 2:
        return 0.0
    # The unbiased two-pass variance by hand: ~5x faster than Tensor.std on CPU for these shapes, and
    # the check takes it for every chain layer's input and output, twice.
    centred = x - x.mean(dim=1, keepdim=True)
    return float((centred.square().sum(dim=1) / (n - 1)).sqrt().mean())


def _stds(model: nn.Module, paths: Sequence[str], x: torch.Tensor, state: Mapping[str, torch.Tensor] | None
          ) -> dict[str, tuple[float, float]]:
    """Path -> (input std, output std) of each chain layer's first call."""
    modules = dict(model.named_modules())
    found: dict[str, tuple[float, float]] = {}
    hooks = []
    for path in paths:
        module = modules.get(path)
        if module is None:
            continue  # functional layers have no module to hook

        def hook(_m: nn.Module, args: tuple, out: object, path: str = path) -> None:
            if isinstance(out, torch.Tensor) and path not in found and args and isinstance(args[0], torch.Tensor):
                found[path] = (channel_std(args[0].detach()), channel_std(out.detach()))

        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            if state is None:
                model(x)
            else:
                torch.func.functional_call(model, dict(state), (x,), strict=False, tie_weights=False)
    finally:
        for h in hooks:
            h.remove()
    return found


@dataclass(frozen=True)
class Reference:
    """The target at its own init on the check's fixed noise batch: the batch and each chain layer's
    (input std, output std). Measured before the transfer writes anything, so the init itself need
    not be kept beside the result (peak memory: one target, not two)."""

    x: torch.Tensor
    stds: Mapping[str, tuple[float, float]]
    small: bool = True  # the small noise batch (convnets): one thread; else the model's own input size


def _threads(small: bool) -> contextlib.AbstractContextManager:
    """One intra-op thread for the small batch (a second thread waits more than it works on shared
    cores); the caller's threads at a model's own input size, where a ViT-L forward is 1.5 s on one
    thread and 0.8 s on two (2-core machine)."""
    from .apply import single_thread

    return single_thread() if small else contextlib.nullcontext()


def reference(model: nn.Module, paths: Sequence[str], input_shape: Sequence[int], seed: int) -> Reference:
    """Run ``model`` (holding the target's init) on the check's noise batch; see :func:`check`."""
    with batch_statistics(model) as has_batchnorm:
        return _reference(model, paths, input_shape, seed, has_batchnorm)


def check(
    model: nn.Module, state: Mapping[str, torch.Tensor], paths: Sequence[str], input_shape: Sequence[int], seed: int,
    direct: Collection[str] | None = None, ref: Reference | None = None,
) -> list[LayerSignal]:
    """Compare each chain layer's input and output std, transferred vs init, on a fixed noise batch.

    ``model`` runs with ``state``'s tensors; ``ref`` is the init's :func:`reference` (default: measured
    now on ``model``'s own tensors, which must then be the init). ``direct``: the paths whose input is the
    previous path's output through norms and activations only (default: all). Only for those is a break
    between the two blamed on the previous layer (``after``): across a residual add the stream's other
    branch sets the scale.
    """
    if ref is None:
        ref = reference(model, paths, input_shape, seed)
    with _threads(ref.small), batch_statistics(model):
        return _compare(model, state, paths, ref, direct)


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[bool]:
    """BatchNorms normalize with the batch's statistics, as when fine-tuning starts; nothing else trains.

    Running statistics describe the activations of the weights they were measured with: the target's
    init, or the source's layer when a strategy carries them over. Fine-tuning normalizes with batch
    statistics and replaces the running ones within a few hundred steps, so the signal it starts from
    is the batch-statistics one. ``track_running_stats=False`` for the check: no buffer (running
    statistics, ``num_batches_tracked``) is read or written, so the checked state is never modified.
    Dropout and drop-path stay off. Yields whether the model has any BatchNorm.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    model.eval()
    for m in norms:
        m.train()
        m.track_running_stats = False
    try:
        yield bool(norms)
    finally:
        for m, (training, tracking) in zip(norms, saved, strict=True):
            m.train(training)
            m.track_running_stats = tracking


def noise(shape: Sequence[int], seed: int) -> torch.Tensor:
    """The check's input batch: a function of its shape and the seed alone, so a cached
    :class:`Reference` can regenerate it instead of storing it."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))


def _reference(
    model: nn.Module, paths: Sequence[str], input_shape: Sequence[int], seed: int, has_batchnorm: bool
) -> Reference:
    chans, *size = input_shape
    small = (chans, *(min(s, CHECK_SIZE) for s in size))
    try:  # convnets take a small batch: the check costs milliseconds, not seconds
        x = noise((2, *small), seed)
        with _threads(True):
            return Reference(x, _stds(model, paths, x, None), small=True)
    except Exception:  # fixed-size models (patch embeddings, window attention) need their own size;
        # one image there: its tokens or positions still give every channel a spread to measure.
        # Batch statistics need two values per channel even after global pooling: two images there.
        x = noise((2 if has_batchnorm else 1, *input_shape), seed)
        with _threads(False):
            return Reference(x, _stds(model, paths, x, None), small=False)


def _compare(
    model: nn.Module, state: Mapping[str, torch.Tensor], paths: Sequence[str], ref: Reference,
    direct: Collection[str] | None,
) -> list[LayerSignal]:
    # The reference ran in float32; compare in float32 (a copy only for half-precision output).
    state = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()}
    before, after = ref.stds, _stds(model, paths, ref.x, state)
    signals: list[LayerSignal] = []
    prev_ratio = 1.0  # the noise batch itself: the same for init and transferred
    for path in paths:
        if path not in before or path not in after:
            continue
        (init_in, init_std), (now_in, std) = before[path], after[path]
        in_ratio = _ratio(now_in, init_in)
        plain = direct is None or path in direct
        if signals and plain and (status := _status(now_in, _gain(in_ratio, prev_ratio))) != "ok":
            signals[-1] = replace(signals[-1], after=status)  # broken between the previous layer and this one
        ratio = _ratio(std, init_std)
        gain = _gain(ratio, in_ratio)
        signals.append(LayerSignal(path, init_std, std, ratio, gain, _status(std, gain)))
        if math.isfinite(ratio):
            prev_ratio = ratio
    return signals


def _ratio(std: float, init_std: float) -> float:
    return std / init_std if init_std > 0 else (1.0 if std == 0 else math.inf)


def _gain(ratio: float, reference: float) -> float:
    """``ratio`` relative to the ratio coming in; 1 (no verdict) when what comes in is already dead.

    The blame goes to the first place the signal breaks: a layer fed a constant input is not
    flagged again for passing the constant on.
    """
    return ratio / reference if reference > 0 and math.isfinite(reference) else 1.0


def _status(std: float, gain: float) -> str:
    if not math.isfinite(std):
        return "nonfinite"
    if gain < COLLAPSE:
        return "collapsed"
    if gain > EXPLODE:
        return "exploded"
    return "ok"

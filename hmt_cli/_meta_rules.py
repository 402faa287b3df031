"""Output shapes of common ops on meta tensors, without running torch's meta kernels.

Many meta kernels are Python decompositions: ``layer_norm`` costs ~1 ms and ``batch_norm`` ~1.7 ms
on a meta tensor, and a 12-block ViT spends most of its trace there. For the ops below the result
is an empty meta tensor of the right shape and dtype (~1 us). Any argument pattern a rule does not
recognise returns ``None`` and the real op runs, so a rule can only be faster, never wrong-er.
In-place ops return their input: the recorder tracks tensors by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["fast_result"]

Rule = Callable[[tuple, dict], Any]


def _empty(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    return torch.empty(tuple(shape), dtype=like.dtype, device="meta")


def _first(args: tuple, kwargs: dict) -> torch.Tensor | None:
    x = args[0] if args else kwargs.get("input")
    return x if isinstance(x, torch.Tensor) and x.is_meta and x.is_floating_point() else None


def _same(inplace_at: int | None = None) -> Rule:
    """Elementwise / normalization: output shaped like the input (``inplace_at``: the flag's position)."""

    def rule(args: tuple, kwargs: dict) -> Any:
        x = _first(args, kwargs)
        if x is None or kwargs.get("dtype") is not None:
            return None
        inplace = kwargs.get("inplace") or (inplace_at is not None and len(args) > inplace_at and args[inplace_at])
        return x if inplace else _empty(x.shape, x)

    return rule


def _broadcast(shapes: list[Sequence[int]]) -> tuple[int, ...] | None:
    ndim = max(len(s) for s in shapes)
    out = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            return None  # let torch raise its own error
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _binary(inplace: bool, true_div: bool = False) -> Rule:
    def rule(args: tuple, kwargs: dict) -> Any:
        x = args[0] if args else None
        other = args[1] if len(args) > 1 else kwargs.get("other")
        if not isinstance(x, torch.Tensor) or not x.is_meta or len(args) > 2 or set(kwargs) - {"other", "alpha"}:
            return None
        floating = x.is_floating_point()
        if not floating and (true_div or x.dtype == torch.bool):
            return None  # integer division and bool logic promote: let torch decide the dtype
        if isinstance(other, torch.Tensor):
            if other.dtype != x.dtype or not other.is_meta:
                return None
            shape = _broadcast([x.shape, other.shape])
        elif (isinstance(other, int) and not isinstance(other, bool)) or (floating and isinstance(other, float)):
            shape = tuple(x.shape)
        else:
            return None
        if shape is None:
            return None
        if inplace:
            return x if shape == tuple(x.shape) else None
        return _empty(shape, x)

    return rule


def _linear(args: tuple, kwargs: dict) -> Any:
    x, weight = _first(args, kwargs), args[1] if len(args) > 1 else kwargs.get("weight")
    if x is None or not isinstance(weight, torch.Tensor) or weight.dim() != 2 or x.shape[-1] != weight.shape[1]:
        return None
    return _empty((*x.shape[:-1], weight.shape[0]), x)


def _conv(args: tuple, kwargs: dict) -> Any:
    x = _first(args, kwargs)
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    values = dict(zip(names, args, strict=False)) | kwargs
    weight, padding = values.get("weight"), values.get("padding", 0)
    if x is None or not isinstance(weight, torch.Tensor) or isinstance(padding, str):
        return None
    dims = weight.dim() - 2
    groups = values.get("groups", 1)
    if x.dim() != dims + 2 or x.shape[1] != weight.shape[1] * groups:
        return None

    def per_dim(value: Any) -> list[int]:
        return [value] * dims if isinstance(value, int) else list(value)

    stride, pad, dil = per_dim(values.get("stride", 1)), per_dim(padding), per_dim(values.get("dilation", 1))
    spatial = [
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(x.shape[2:], weight.shape[2:], stride, pad, dil, strict=True)
    ]
    return None if min(spatial) < 1 else _empty((x.shape[0], weight.shape[0], *spatial), x)


def _sdpa(args: tuple, kwargs: dict) -> Any:
    q = _first(args, kwargs)
    v = args[2] if len(args) > 2 else kwargs.get("value")
    if q is None or not isinstance(v, torch.Tensor):
        return None
    return _empty((*q.shape[:-1], v.shape[-1]), q)


def _reduce(args: tuple, kwargs: dict) -> Any:
    x = _first(args, kwargs)
    if x is None or set(kwargs) - {"dim", "keepdim"}:
        return None
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if dim is None:
        dims = set(range(x.dim()))
    elif isinstance(dim, int):
        dims = {dim % x.dim()}
    elif isinstance(dim, (tuple, list)) and all(isinstance(d, int) for d in dim):
        dims = {d % x.dim() for d in dim}
    else:
        return None
    shape = [1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims]
    return _empty(shape, x)


def _cat(args: tuple, kwargs: dict) -> Any:
    tensors = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not isinstance(tensors, (tuple, list)) or not tensors or not isinstance(dim, int):
        return None
    if not all(isinstance(t, torch.Tensor) and t.is_meta and t.dim() > 0 for t in tensors):
        return None
    first = tensors[0]
    dim %= first.dim()
    if any(t.dim() != first.dim() or t.dtype != first.dtype for t in tensors):
        return None
    if any(t.shape[:dim] != first.shape[:dim] or t.shape[dim + 1:] != first.shape[dim + 1:] for t in tensors):
        return None
    shape = list(first.shape)
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return _empty(shape, first)


def _interpolate(args: tuple, kwargs: dict) -> Any:
    x = _first(args, kwargs)
    size = args[1] if len(args) > 1 else kwargs.get("size")
    scale = args[2] if len(args) > 2 else kwargs.get("scale_factor")
    if x is None or x.dim() < 3:
        return None
    dims = x.dim() - 2
    if size is not None:
        spatial = [size] * dims if isinstance(size, int) else list(size)
    elif isinstance(scale, (int, float, tuple, list)):
        scales = [scale] * dims if isinstance(scale, (int, float)) else list(scale)
        spatial = [int(s * f) for s, f in zip(x.shape[2:], scales, strict=True)]
    else:
        return None
    if len(spatial) != dims or not all(isinstance(s, int) for s in spatial):
        return None
    return _empty((*x.shape[:2], *spatial), x)


def _repeat(args: tuple, kwargs: dict) -> Any:
    x = _first(args, kwargs)
    sizes = args[1] if len(args) == 2 and isinstance(args[1], (tuple, list, torch.Size)) else args[1:]
    if x is None or kwargs or not sizes or not all(isinstance(s, int) for s in sizes) or len(sizes) < x.dim():
        return None
    padded = (1,) * (len(sizes) - x.dim()) + tuple(x.shape)
    return _empty([a * b for a, b in zip(padded, sizes, strict=True)], x)


def _rnn(args: tuple, kwargs: dict) -> Any:
    """``torch.lstm``/``torch.gru`` (what nn.LSTM/nn.GRU call): the meta kernels unroll every time step."""
    x = _first(args, kwargs)
    if x is None or kwargs or len(args) < 9 or not isinstance(args[1], (tuple, list, torch.Tensor)):
        return None
    hx = list(args[1]) if isinstance(args[1], (tuple, list)) else [args[1]]
    if not all(isinstance(h, torch.Tensor) and h.dim() == 3 for h in hx):
        return None
    directions = 2 if args[7] else 1
    out = _empty((*x.shape[:-1], directions * hx[0].shape[-1]), x)
    return (out, *(_empty(h.shape, h) for h in hx))


def _table() -> dict[Any, Rule]:
    table: dict[Any, Rule] = {}
    inplace_flag = {"relu": 1, "silu": 1, "hardswish": 1, "hardsigmoid": 1, "mish": 1, "relu6": 1, "elu": 2,
                    "leaky_relu": 2, "hardtanh": 3, "dropout": 3, "dropout1d": 3, "dropout2d": 3, "celu": 2}
    for name in ("gelu", "relu", "silu", "hardswish", "hardsigmoid", "mish", "relu6", "elu", "leaky_relu",
                 "hardtanh", "celu", "softplus", "layer_norm", "batch_norm", "group_norm", "rms_norm",
                 "instance_norm", "normalize", "softmax", "log_softmax", "dropout", "dropout1d", "dropout2d",
                 "sigmoid", "tanh"):
        if hasattr(F, name):
            table[getattr(F, name)] = _same(inplace_flag.get(name))
    for name in ("relu", "sigmoid", "tanh", "softmax", "clamp", "clip", "clamp_min", "clamp_max", "neg", "abs",
                 "exp", "sqrt", "rsqrt", "erf", "contiguous", "clone", "square", "log"):
        for owner in (torch, torch.Tensor):
            if hasattr(owner, name):
                table[getattr(owner, name)] = _same()
        if hasattr(torch.Tensor, name + "_"):
            table[getattr(torch.Tensor, name + "_")] = _first  # in place: the result is the input
    divisions = {"div", "true_divide", "__truediv__", "__rtruediv__", "div_", "__itruediv__"}
    for name in ("add", "sub", "mul", "div", "true_divide", "__add__", "__radd__", "__sub__", "__rsub__", "__mul__",
                 "__rmul__", "__truediv__", "__rtruediv__", "pow", "__pow__", "maximum", "minimum"):
        for owner in (torch, torch.Tensor):
            if hasattr(owner, name):
                table[getattr(owner, name)] = _binary(inplace=False, true_div=name in divisions)
    for name in ("add_", "sub_", "mul_", "div_", "__iadd__", "__isub__", "__imul__", "__itruediv__"):
        table[getattr(torch.Tensor, name)] = _binary(inplace=True, true_div=name in divisions)
    table[F.linear] = _linear
    for conv in (F.conv1d, F.conv2d, F.conv3d):
        table[conv] = _conv
    table[F.scaled_dot_product_attention] = _sdpa
    for owner in (torch, torch.Tensor):
        for name in ("mean", "sum", "amax", "amin"):
            table[getattr(owner, name)] = _reduce
    for cat in (torch.cat, torch.concat, torch.concatenate):
        table[cat] = _cat
    table[F.interpolate] = _interpolate
    table[torch.Tensor.repeat] = _repeat
    table[torch.lstm] = table[torch.gru] = _rnn
    return table


_RULES = _table()


def fast_result(func: Any, args: tuple, kwargs: dict) -> Any:
    """The op's output as an empty meta tensor, or ``None`` where the real op must run."""
    rule = _RULES.get(func)
    return rule(args, kwargs) if rule is not None else None

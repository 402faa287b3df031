"""Record a model's dataflow as a flat list of :class:`OpRecord` on the meta device.

Two extractors produce the same record stream:

* ``fx``: ``torch.fx`` symbolic trace with timm's no-trace registry (leaf modules and autowrapped
  functions), then an interpreter run on meta tensors. Conv/linear/norm module calls become records
  directly; everything else (functions, methods, opaque leaf modules such as timm's squeeze-excite)
  runs under a function-level recorder, so weights inside leaves are still seen.
* ``exec``: the fallback where fx cannot trace (data-dependent Python control flow): one eager
  forward pass on meta tensors under the same function-level recorder. It also sees parameters
  used through functional calls (a fused ``qkv`` weight, ``F.linear(x, self.w)``), which forward
  hooks would miss.

Records reference their data inputs by index; parameters and buffers are recorded by state-dict
name, never as data. Nothing here allocates weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .graph import OpRecord, Trace

__all__ = ["record_fx", "record_exec", "is_weight_layer", "is_norm"]

_CONV_FUNCS = {"conv1d", "conv2d", "conv3d"}
_NORM_FUNCS = {"batch_norm", "layer_norm", "group_norm", "rms_norm", "instance_norm"}
_MUL_FUNCS = {"mul", "mul_", "__mul__", "__rmul__", "multiply"}
_GATE_FUNCS = {"sigmoid", "sigmoid_", "hardsigmoid", "hard_sigmoid", "softmax", "_softmax"}
_MATMUL_FUNCS = {"matmul", "__matmul__", "mm", "bmm"}


def is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


def is_norm(module: nn.Module) -> bool:
    """Norms: torch's, and any parameter-only module named *Norm* with per-channel weights (timm's)."""
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return True
    if hasattr(nn, "RMSNorm") and isinstance(module, nn.RMSNorm):
        return True
    weight = getattr(module, "weight", None)
    return (
        "norm" in type(module).__name__.lower()
        and isinstance(weight, torch.Tensor)
        and weight.dim() == 1
        and not any(True for _ in module.children())
    )


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return tuple(value[0].shape)
    return ()


class _Recorder(TorchFunctionMode):
    """Records every torch function call whose output is a tensor, keyed by tensor identity."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.names: dict[int, str] = {}
        for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]:
            self.names.setdefault(id(tensor), name)
        self.records: list[OpRecord] = []
        self.producer: dict[int, int] = {}
        self.derived: dict[int, str] = {}  # tensors computed from one parameter only (StdConv weight)
        self.keep: list[Any] = []  # keeps outputs alive so that tensor ids stay unique
        self.params_used: set[str] = set()
        self.suspended = False

    # -- bookkeeping shared by both extractors ---------------------------------------------
    def add(self, record: OpRecord, outputs: Any) -> int:
        index = len(self.records)
        self.records.append(record)
        self.params_used.update(record.params)
        for leaf in tree_flatten(outputs)[0]:
            if isinstance(leaf, torch.Tensor):
                self.producer[id(leaf)] = index
                self.keep.append(leaf)
        return index

    def data_inputs(self, values: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
        data: list[int] = []
        params: list[str] = []
        for leaf in tree_flatten(values)[0]:
            if not isinstance(leaf, torch.Tensor):
                continue
            key = id(leaf)
            if key in self.names:
                params.append(self.names[key])
            elif key in self.derived:
                params.append(self.derived[key])
            elif key in self.producer and self.producer[key] not in data:
                data.append(self.producer[key])
        return tuple(data), tuple(dict.fromkeys(params))

    def _param_name(self, value: Any) -> str | None:
        if not isinstance(value, torch.Tensor):
            return None
        return self.names.get(id(value)) or self.derived.get(id(value))

    # -- the function-level hook --------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.suspended or not isinstance(out, (torch.Tensor, tuple, list)) or not _shape(out):
            return out
        name = getattr(func, "__name__", "")
        data, params = self.data_inputs((args, kwargs))
        if not data and len(params) == 1 and isinstance(out, torch.Tensor):
            self.derived[id(out)] = params[0]  # e.g. a standardized conv weight
            self.keep.append(out)
            return out
        self.add(self._classify(name, args, kwargs, data, params, out), out)
        return out

    def _classify(
        self, name: str, args: tuple, kwargs: dict, data: tuple[int, ...], params: tuple[str, ...], out: Any
    ) -> OpRecord:
        shape = _shape(out)
        weight_arg = args[1] if len(args) > 1 else kwargs.get("weight")
        weight = self._param_name(weight_arg)
        if weight and (name in _CONV_FUNCS or name == "linear"):
            bias_arg = args[2] if len(args) > 2 else kwargs.get("bias")
            groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
            stride = args[3] if len(args) > 3 else kwargs.get("stride", 1)
            return OpRecord(
                "layer", data, shape, _owner(weight), weight, self._param_name(bias_arg),
                tuple(weight_arg.shape), int(groups), _tuple(stride), params,
            )
        if name in _MATMUL_FUNCS and weight_arg is not None and weight and weight_arg.dim() == 2:
            # x @ W with W stored (in, out): a linear layer written by hand.
            return OpRecord("layer", data, shape, _owner(weight), weight, None, tuple(weight_arg.shape),
                            params=params)
        if name in _NORM_FUNCS:
            norm_weight = next((p for p in params if p.endswith("weight")), None)
            if norm_weight:
                bias = next((p for p in params if p.endswith("bias")), None)
                return OpRecord("norm", data, shape, _owner(norm_weight), norm_weight, bias, params=params)
        if name in _MUL_FUNCS:
            return OpRecord("mul", data, shape, params=params)
        if name in _GATE_FUNCS:
            return OpRecord("gate", data, shape, params=params)
        return OpRecord("other", data, shape, params=params)

    @contextlib.contextmanager
    def suspend(self) -> Iterator[None]:
        previous, self.suspended = self.suspended, True
        try:
            yield
        finally:
            self.suspended = previous


def _owner(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


def _tuple(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def _module_record(path: str, module: nn.Module, data: tuple[int, ...], shape: tuple[int, ...]) -> OpRecord:
    params = tuple(f"{path}.{n}" for n, _ in module.named_parameters(recurse=False))
    params += tuple(f"{path}.{n}" for n, _ in module.named_buffers(recurse=False))
    bias = f"{path}.bias" if getattr(module, "bias", None) is not None else None
    weight = f"{path}.weight" if getattr(module, "weight", None) is not None else None
    if is_weight_layer(module):
        stride = getattr(module, "stride", ())
        return OpRecord("layer", data, shape, path, weight, bias, tuple(module.weight.shape),
                        int(getattr(module, "groups", 1)), _tuple(stride), params)
    return OpRecord("norm", data, shape, path, weight, bias, params=params)


class _LeafTracer(fx.Tracer):
    """fx tracer that treats timm's no-trace modules and every norm as leaves."""

    def __init__(self) -> None:
        from timm.layers import get_notrace_functions, get_notrace_modules

        super().__init__(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        self._leaves = tuple(get_notrace_modules())

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, self._leaves) or is_norm(m) or is_weight_layer(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)


class _RecordingInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, recorder: _Recorder) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.recorder = recorder

    def run_node(self, n: fx.Node) -> Any:
        rec = self.recorder
        if n.op == "placeholder":
            out = super().run_node(n)
            rec.add(OpRecord("input", (), _shape(out)), out)
            return out
        if n.op == "call_module":
            module = self.module.get_submodule(str(n.target))
            if is_weight_layer(module) or is_norm(module):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                data, _ = rec.data_inputs((args, kwargs))
                with rec.suspend():
                    out = super().run_node(n)
                rec.add(_module_record(str(n.target), module, data, _shape(out)), out)
                return out
        return super().run_node(n)


def _example_input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty((1, *shape), device="meta")


def record_fx(model: nn.Module, shape: tuple[int, ...]) -> Trace:
    """Trace with torch.fx (timm's leaf registry) and interpret on meta tensors."""
    graph = _LeafTracer().trace(model)
    gm = fx.GraphModule(model, graph)
    recorder = _Recorder(gm)
    with recorder:
        out = _RecordingInterpreter(gm, recorder).run(_example_input(shape))
    recorder.add(OpRecord("output", recorder.data_inputs(out)[0], ()), None)
    return Trace("fx", tuple(recorder.records), shape, frozenset(recorder.params_used))


def record_exec(model: nn.Module, shape: tuple[int, ...]) -> Trace:
    """Fallback: one eager forward on meta tensors under the function-level recorder."""
    recorder = _Recorder(model)
    x = _example_input(shape)
    recorder.add(OpRecord("input", (), tuple(x.shape)), x)
    with recorder, torch.no_grad():
        out = model(x)
    recorder.add(OpRecord("output", recorder.data_inputs(out)[0], ()), None)
    return Trace("exec", tuple(recorder.records), shape, frozenset(recorder.params_used))

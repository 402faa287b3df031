"""Record a model's dataflow as a flat list of :class:`OpRecord` on the meta device.

Two extractors produce the same record stream from one function-level recorder (a
``TorchFunctionMode``), so every parameter an op reads is seen, also those used functionally
(a fused ``qkv`` weight through ``F.linear``, a relative-position table) that forward hooks miss:

* ``fx``: ``torch.fx`` symbolic trace with timm's no-trace registry (leaf modules and autowrapped
  functions), then the graph's nodes are run one by one on meta tensors under the recorder.
  A traced graph has no Python control flow, so the record is valid for every input.
* ``exec``: where fx cannot trace, one eager forward on meta tensors under the recorder.
  Data-dependent conditions (``if x.sum() > 0``) cannot be evaluated on meta tensors; the recorder
  answers them with a fixed guess (``True``, ``1``) and counts them in ``Trace.guesses``.

Records reference their data inputs by index; parameters and buffers are recorded by state-dict
name, never as data. Shapes come from :mod:`hmt_cli._meta_rules` where torch's meta kernels are
slow. Nothing here allocates weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .graph import OpRecord, Trace

__all__ = ["record_fx", "record_exec", "is_weight_layer", "is_norm"]

_CONV_FUNCS = frozenset({"conv1d", "conv2d", "conv3d"})
_NORM_FUNCS = frozenset({"batch_norm", "layer_norm", "group_norm", "rms_norm", "instance_norm", "fast_layer_norm"})
# Names of the ops whose data inputs merge streams; graph.py tells shortcuts from branches by them.
_OP_KINDS = {
    **dict.fromkeys(("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"), "mul"),
    **dict.fromkeys(("add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
                     "__isub__", "subtract"), "add"),
    **dict.fromkeys(("cat", "concat", "concatenate", "stack", "hstack", "vstack", "dstack"), "cat"),
    **dict.fromkeys(("matmul", "__matmul__", "mm", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention"),
                    "matmul"),
    **dict.fromkeys(("sigmoid", "sigmoid_", "hardsigmoid", "hard_sigmoid", "softmax", "_softmax"), "gate"),
}
_RNN_FUNCS = frozenset({"lstm", "gru", "rnn_tanh", "rnn_relu"})
# Tensor -> Python value conversions: impossible on meta tensors, answered with a fixed guess.
_GUESSES: dict[Any, Any] = {
    torch.Tensor.__bool__: True, torch.Tensor.item: 1, torch.Tensor.__int__: 1, torch.Tensor.__index__: 1,
    torch.Tensor.__float__: 1.0,
}


def is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))


def is_norm(module: nn.Module) -> bool:
    """Norms: torch's, and any parameter-only module named *Norm* with per-channel weights (timm's).

    Reads ``_parameters``/``_modules`` directly: fx patches ``nn.Module.__getattr__`` while tracing.
    """
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)):
        return True
    weight = module._parameters.get("weight")
    return "norm" in type(module).__name__.lower() and weight is not None and weight.dim() == 1 and not module._modules


def _func_name(func: Any) -> str:
    name = getattr(func, "__name__", "")
    if name == "__get__":  # a tensor property such as ``.T``: name it after the property
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Tensors in nested args (cheaper than pytree: args are almost always flat)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return tuple(value[0].shape)
    return ()


def _tuple(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):  # padding="same" style arguments carry no stride
        return ()
    return tuple(int(v) for v in value)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


class _Recorder(TorchFunctionMode):
    """Records every torch function call whose output is a tensor, keyed by tensor identity."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        from ._meta_rules import fast_result

        self.fast_result = fast_result
        self.names: dict[int, tuple[str, ...]] = {}
        self.aliases: dict[str, str] = {}  # a tied parameter's second name -> its first
        # Tensors are known by id(), so every tensor named or recorded is kept alive: a buffer the
        # forward replaces (convit's rel_indices) would otherwise lend its id to a new tensor.
        self.keep: list[Any] = []
        # A weight layer's weight must be trainable: a buffer used as a conv weight is a fixed
        # filter (timm's BlurPool / anti-aliasing), which passes data through like any other op.
        self.param_ids = {id(p) for p in model.parameters()}
        self._param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        for name, tensor in (*model.named_parameters(remove_duplicate=False), *model.named_buffers()):
            first = self.names.setdefault(id(tensor), (name,))
            self.keep.append(tensor)
            if first[0] != name:
                self.aliases[name] = first[0]
        self.records: list[OpRecord] = []
        self.producer: dict[int, int] = {}
        self.params_used: dict[str, str] = {}  # state-dict key -> kind of the op that first read it
        self.guesses = 0

    def add(self, record: OpRecord, outputs: Any) -> int:
        index = len(self.records)
        self.records.append(record)
        for param in record.params:
            self.params_used.setdefault(param, record.op)
        for leaf in _tensors(outputs):
            self.producer[id(leaf)] = index
            self.keep.append(leaf)
        return index

    def data_inputs(self, values: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
        data: list[int] = []
        params: list[str] = []
        for leaf in _tensors(values):
            key = id(leaf)
            names = self.names.get(key)
            if names is not None:
                params.extend(names)
            elif key in self.producer and self.producer[key] not in data:
                data.append(self.producer[key])
        return tuple(data), tuple(dict.fromkeys(params))

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in _GUESSES and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            self.guesses += 1  # a data-dependent value: the trace follows one guessed path
            return _GUESSES[func]
        out = self.fast_result(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        if type(out) is torch.Size or not isinstance(out, (torch.Tensor, tuple, list)) or not _shape(out):
            if func is torch.Tensor.__setitem__:  # in place: the target now also depends on the value
                self._record(func, args, kwargs, args[0])
            return out
        self._record(func, args, kwargs, out)
        return out

    def _record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        data, params = self.data_inputs((args, kwargs))
        name = _func_name(func)
        is_layer = (name in _CONV_FUNCS or name == "linear") and _arg(args, kwargs, 1, "weight") is not None
        if not data and params and not is_layer and isinstance(out, torch.Tensor):
            # Computed from parameters alone (a standardized conv weight, q_bias|v_bias, a gathered
            # relative-position table): later ops see the parameters it came from.
            self.names[id(out)] = params
            self.keep.append(out)
            return
        self.add(self._classify(name, args, kwargs, data, params, out), out)

    def _classify(
        self, name: str, args: tuple, kwargs: dict, data: tuple[int, ...], params: tuple[str, ...], out: Any
    ) -> OpRecord:
        shape = _shape(out)
        weight_arg = _arg(args, kwargs, 1, "weight")
        weights = self.names.get(id(weight_arg), ()) if isinstance(weight_arg, torch.Tensor) else ()
        if id(weight_arg) not in self.param_ids and not (weights and all(w in self._param_names for w in weights)):
            weights = ()
        if weights and (name in _CONV_FUNCS or name == "linear"):
            bias_arg = _arg(args, kwargs, 2, "bias")
            biases = self.names.get(id(bias_arg), ()) if isinstance(bias_arg, torch.Tensor) else ()
            weight = next((w for w in weights if w.endswith("weight")), weights[0])
            bias = biases[0] if len(biases) == 1 else None
            return OpRecord(
                "layer", data, shape, _layer_path(weight), weight, bias, tuple(weight_arg.shape),
                int(_arg(args, kwargs, 6, "groups", 1)), _tuple(_arg(args, kwargs, 3, "stride", 1)), params,
            )
        by_hand = name in ("matmul", "__matmul__", "mm") and weights and weights[0].endswith("weight")
        if by_hand and weight_arg.dim() == 2:
            # x @ W with W a stored matrix named *weight: a linear layer written by hand (other
            # matrices, such as halo attention's width_rel, are position tables).
            return OpRecord("layer", data, shape, _layer_path(weights[0]), weights[0], None,
                            tuple(weight_arg.shape), params=params)
        if name in _NORM_FUNCS:
            norm_weight = next((p for p in params if p.endswith("weight")), None)
            if norm_weight:
                bias = next((p for p in params if p.endswith("bias")), None)
                return OpRecord("norm", data, shape, _owner(norm_weight), norm_weight, bias, params=params)
        if name in _RNN_FUNCS:
            return OpRecord("rnn", data, shape, params=params)
        kind = _OP_KINDS.get(name, "other")
        if kind in ("add", "cat", "matmul", "mul") and len(data) < 2:
            kind = "other"  # x * scale, x + bias: one data input, nothing merges
        return OpRecord(kind, data, shape, params=params)


def _owner(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


def _layer_path(weight: str) -> str:
    """A layer is named after its module; a bare weight parameter (``attn.w_q``) after itself."""
    return _owner(weight) if weight.rsplit(".", 1)[-1] == "weight" else weight


def _example_input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty((1, *shape), device="meta")


@contextlib.contextmanager
def _recording(model: nn.Module, shape: tuple[int, ...]) -> Iterator[tuple[_Recorder, torch.Tensor]]:
    recorder = _Recorder(model)
    x = _example_input(shape)
    recorder.add(OpRecord("input", (), tuple(x.shape)), x)
    with recorder, torch.no_grad():
        yield recorder, x


def _finish(recorder: _Recorder, extractor: str, shape: tuple[int, ...], out: Any) -> Trace:
    recorder.add(OpRecord("output", recorder.data_inputs(out)[0], ()), None)
    return Trace(extractor, tuple(recorder.records), shape, frozenset(recorder.params_used),
                 param_ops=dict(recorder.params_used), aliases=dict(recorder.aliases), guesses=recorder.guesses)


def record_fx(model: nn.Module, shape: tuple[int, ...]) -> Trace:
    """Trace with torch.fx (timm's leaf registry), then run the graph on meta tensors."""
    from ._fx_trace import run_graph, trace_graph

    graph = trace_graph(model)
    with _recording(model, shape) as (recorder, x):
        out = run_graph(graph, model, x)
    return _finish(recorder, "fx", shape, out)


def record_exec(model: nn.Module, shape: tuple[int, ...]) -> Trace:
    """Fallback: one eager forward on meta tensors under the function-level recorder."""
    with _recording(model, shape) as (recorder, x):
        out = model(x)
    return _finish(recorder, "exec", shape, out)

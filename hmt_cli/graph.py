"""``nn.Module`` -> :class:`LayerGraph`: weight layers and the dataflow edges between them.

A *weight layer* is a conv (1d/2d/3d, any groups) or linear op whose weight is a parameter of the
model, whether called as a module or functionally. An edge ``u -> v`` means the output of ``u``
reaches the data input of ``v`` through ops that are not weight layers. An edge is *gated* when
that route passes the broadcast side of an elementwise multiply, or a sigmoid/softmax output into
one: squeeze-excite, ECA and CBAM branches feed the main stream only through such gates.

See ``docs/chain.md`` for the exact rules.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from math import prod

from .errors import UnsupportedModel

__all__ = ["OpRecord", "Trace", "LayerNode", "Edge", "LayerGraph", "extract_graph", "build_layer_graph"]


@dataclass(frozen=True)
class OpRecord:
    """One executed op. ``op`` is input | layer | norm | mul | gate | other | output."""

    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    module: str | None = None  # layer/norm path (module path, or weight name minus ".weight")
    weight: str | None = None  # state-dict key of the weight (layers and norms)
    bias: str | None = None
    weight_shape: tuple[int, ...] = ()
    groups: int = 1
    stride: tuple[int, ...] = ()
    params: tuple[str, ...] = ()  # every parameter/buffer this op read directly


@dataclass(frozen=True)
class Trace:
    extractor: str
    records: tuple[OpRecord, ...]
    input_shape: tuple[int, ...]
    params_used: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class LayerNode:
    index: int  # execution order of the layer's first call
    path: str  # module path (or weight name minus ".weight" for functional layers)
    kind: str  # conv | depthwise | grouped | linear
    weight: str  # state-dict key
    bias: str | None
    shape: tuple[int, ...]  # weight shape
    groups: int = 1
    stride: tuple[int, ...] = ()
    reduction: int = 1  # input resolution / this layer's output resolution (its "stage")
    norm: str | None = None  # module path of the attached normalization layer
    norm_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edge:
    src: int
    dst: int
    gated: bool = False


@dataclass(frozen=True)
class LayerGraph:
    model: str
    extractor: str
    input_shape: tuple[int, ...]
    layers: tuple[LayerNode, ...]
    edges: tuple[Edge, ...]
    head: frozenset[int]  # layer indices of the classifier head
    outputs: frozenset[int]  # layers whose output reaches the model output directly
    param_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # every state-dict tensor
    params_used: frozenset[str] = field(default_factory=frozenset)  # tensors some op read
    norms: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # every norm path -> its keys
    seconds: float = 0.0

    def layer(self, path: str) -> LayerNode:
        for node in self.layers:
            if node.path == path:
                return node
        raise KeyError(path)


def layer_kind(shape: tuple[int, ...], groups: int) -> str:
    if len(shape) == 2:
        return "linear"
    if groups == 1:
        return "conv"
    out_channels, in_per_group = shape[0], shape[1]
    if in_per_group == 1 and out_channels % groups == 0:
        return "depthwise"
    return "grouped"


def _merge(reaches: list[dict[int, bool]], gated: list[bool]) -> dict[int, bool]:
    """Union of upstream layers; a layer stays gated only if every route to here is gated."""
    merged: dict[int, bool] = {}
    for reach, gate in zip(reaches, gated, strict=True):
        for layer, was_gated in reach.items():
            flag = was_gated or gate
            merged[layer] = merged[layer] and flag if layer in merged else flag
    return merged


def _resolution(shape: tuple[int, ...]) -> int | None:
    return shape[2] if len(shape) == 4 else None


def build_layer_graph(
    trace: Trace,
    model_name: str,
    head_names: tuple[str, ...],
    param_shapes: Mapping[str, tuple[int, ...]],
    norm_paths: Mapping[str, tuple[str, ...]],
) -> LayerGraph:
    """Pure: records -> layers, edges, attached norms, head."""
    records = trace.records
    in_res = trace.input_shape[-1] if len(trace.input_shape) == 3 else None
    node_of: dict[str, int] = {}
    protos: list[dict] = []
    edges: dict[tuple[int, int], bool] = {}
    reach: list[dict[int, bool]] = []
    reduction: list[int] = []
    layer_at_record: dict[int, int] = {}
    post_norm: dict[int, str] = {}
    pre_norm: dict[int, str] = {}
    outputs: set[int] = set()

    def through_plain(index: int) -> int:
        # Walk back over single-input, parameter-free ops (reshape, permute, dropout, activation).
        while records[index].op in ("other", "gate") and len(records[index].inputs) == 1 and not records[index].params:
            index = records[index].inputs[0]
        return index

    for i, rec in enumerate(records):
        ins = [j for j in rec.inputs if j < i]
        red = max((reduction[j] for j in ins), default=1)
        res = _resolution(rec.shape)
        if rec.op == "layer" and res and in_res and len(rec.weight_shape) > 2:
            red = max(1, round(in_res / res))
        reduction.append(red)
        if rec.op == "layer":
            node = node_of.get(rec.module)
            if node is None:
                node = node_of[rec.module] = len(protos)
                protos.append({"rec": rec, "reduction": red})
            layer_at_record[i] = node
            for up, gated in _merge([reach[j] for j in ins], [False] * len(ins)).items():
                if up < node:  # a module called again later (weight sharing) adds no back edge
                    edges[(up, node)] = edges.get((up, node), True) and gated
            source = through_plain(ins[0]) if ins else None
            if source is not None and records[source].op == "norm" and node not in pre_norm:
                pre_norm[node] = records[source].module
            reach.append({node: False})
            continue
        if rec.op == "mul" and len(ins) > 1:
            numel = prod(rec.shape)
            gates = [
                prod(records[j].shape) < numel or records[through_plain(j)].op == "gate"
                for j in ins
            ]
            if all(gates):  # nothing to tell apart (e.g. gate * gate): treat as data
                gates = [False] * len(ins)
            reach.append(_merge([reach[j] for j in ins], gates))
        else:
            reach.append(_merge([reach[j] for j in ins], [False] * len(ins)))
        if rec.op == "norm" and ins:
            source = through_plain(ins[0])
            if source in layer_at_record and layer_at_record[source] not in post_norm:
                post_norm[layer_at_record[source]] = rec.module
        if rec.op == "output":
            outputs.update(reach[-1])

    if not protos:
        raise UnsupportedModel(f"{model_name}: no conv or linear layer with a weight parameter was executed")

    attached: set[str] = set()
    layers: list[LayerNode] = []
    for index, proto in enumerate(protos):
        rec = proto["rec"]
        norm = post_norm.get(index)
        if norm is None and pre_norm.get(index) not in attached:
            norm = pre_norm.get(index)
        if norm:
            attached.add(norm)
        layers.append(
            LayerNode(
                index=index, path=rec.module, kind=layer_kind(rec.weight_shape, rec.groups), weight=rec.weight,
                bias=rec.bias, shape=rec.weight_shape, groups=rec.groups, stride=rec.stride,
                reduction=proto["reduction"], norm=norm, norm_keys=norm_paths.get(norm, ()) if norm else (),
            )
        )
    head = frozenset(
        n.index for n in layers if any(n.path == h or n.path.startswith(h + ".") for h in head_names)
    )
    if not head:  # custom models without a cfg: a final linear straight into the output
        head = frozenset(n for n in outputs if layers[n].kind == "linear")
    return LayerGraph(
        model=model_name,
        extractor=trace.extractor,
        input_shape=trace.input_shape,
        layers=tuple(layers),
        edges=tuple(Edge(s, d, g) for (s, d), g in sorted(edges.items())),
        head=head,
        outputs=frozenset(outputs),
        param_shapes=dict(param_shapes),
        params_used=trace.params_used,
        norms=dict(norm_paths),
    )


def _norm_paths(model: object) -> dict[str, tuple[str, ...]]:
    from .trace import is_norm

    paths: dict[str, tuple[str, ...]] = {}
    for path, module in model.named_modules():  # type: ignore[attr-defined]
        if path and is_norm(module):
            keys = [f"{path}.{n}" for n, _ in module.named_parameters(recurse=False)]
            keys += [f"{path}.{n}" for n, _ in module.named_buffers(recurse=False)]
            paths[path] = tuple(keys)
    return paths


def extract_graph(model: object, model_name: str, extractor: str = "auto") -> LayerGraph:
    """Trace ``model`` (build it on the meta device) into a :class:`LayerGraph`.

    ``extractor``: ``fx``, ``exec`` or ``auto`` (fx first, exec where fx fails).
    """
    from .models import classifier_names, input_size
    from .trace import record_exec, record_fx

    start = time.perf_counter()
    shape = input_size(model)  # type: ignore[arg-type]
    order = {"auto": (record_fx, record_exec), "fx": (record_fx,), "exec": (record_exec,)}[extractor]
    failures: list[str] = []
    trace = None
    for record in order:
        try:
            trace = record(model, shape)  # type: ignore[arg-type]
            break
        except Exception as exc:  # any tracing failure moves on to the next extractor
            failures.append(f"{record.__name__.removeprefix('record_')}: {type(exc).__name__}: {exc}")
    if trace is None:
        detail = "; ".join(f.splitlines()[0][:200] for f in failures)
        raise UnsupportedModel(f"cannot extract the graph of {model_name}: {detail}")
    state = model.state_dict(keep_vars=True)  # type: ignore[attr-defined]
    param_shapes = {k: tuple(v.shape) for k, v in state.items()}
    graph = build_layer_graph(trace, model_name, classifier_names(model), param_shapes, _norm_paths(model))  # type: ignore[arg-type]
    return _with_time(graph, time.perf_counter() - start)


def _with_time(graph: LayerGraph, seconds: float) -> LayerGraph:
    from dataclasses import replace

    return replace(graph, seconds=seconds)

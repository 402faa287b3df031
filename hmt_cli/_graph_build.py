"""Records -> :class:`~hmt_cli.graph.LayerGraph`: one pass over a :class:`~hmt_cli.graph.Trace`.

Pure (no torch). Every record gets its *reach*: the nearest weight layers upstream of it, whether
every route from each is gated, and the first op on the route that merged streams. A layer's
reach becomes its incoming edges. Norms attach to the layer they follow (post-norm), else to the
layer they feed (pre-norm); the head comes from the model's cfg. docs/chain.md has the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from math import prod

from .errors import UnsupportedModel
from .graph import Edge, LayerGraph, LayerNode, OpRecord, Trace, layer_kind

__all__ = ["build_layer_graph"]

Reach = dict[int, tuple[bool, str]]  # nearest upstream layer -> (gated on every route, first merge op)


def _combine(reaches: Sequence[Reach], gated: Sequence[bool], merge: str) -> Reach:
    """Union of upstream layers; gated only if every route is; ``merge`` labels routes not yet merged."""
    out: Reach = {}
    for reach, gate in zip(reaches, gated, strict=True):
        for layer, (was_gated, how) in reach.items():
            flag, how = was_gated or gate, how or merge
            if layer in out:
                old_flag, old_how = out[layer]
                out[layer] = (old_flag and flag, "" if "" in (old_how, how) else old_how)
            else:
                out[layer] = (flag, how)
    return out


def _resolution(rec: OpRecord) -> int | None:
    """Spatial size of a layer's output: NCHW for convs, NHWC (square) for linears on 4-D maps."""
    shape = rec.shape
    if len(shape) != 4:
        return None
    if len(rec.weight_shape) > 2:
        return shape[2]
    return shape[1] if shape[1] == shape[2] else None


def _gates(records: Sequence[OpRecord], rec: OpRecord, ins: list[int], plain: Callable[[int], int]) -> list[bool]:
    """Which inputs of a multiply are gates: the broadcast side, or a sigmoid/softmax output."""
    numel = prod(rec.shape)
    gates = [prod(records[j].shape) < numel or records[plain(j)].op == "gate" for j in ins]
    return [False] * len(ins) if all(gates) else gates  # gate * gate: nothing to tell apart


class _Builder:
    """One pass over the records; every record gets its reach, reduction and input dependence."""

    def __init__(self, trace: Trace) -> None:
        self.records = trace.records
        self.in_res = trace.input_shape[-1] if len(trace.input_shape) == 3 else None
        self.node_of: dict[str, int] = {}
        self.protos: list[tuple[OpRecord, int, bool]] = []  # first call: record, reduction, input-dependent
        self.layer_inputs: list[tuple[int, ...]] = []
        self.extra: dict[int, dict[str, None]] = {}
        self.edges: dict[tuple[int, int], tuple[bool, str]] = {}
        self.reach: list[Reach] = []
        self.reduction: list[int] = []
        self.dep: list[bool] = []
        self.layer_at: dict[int, int] = {}
        self.post_norm: dict[int, str] = {}
        self.pre_norm: dict[int, str] = {}
        self.outputs: set[int] = set()
        self.output_merge: dict[int, str] = {}

    def plain(self, index: int) -> int:
        """Walk back over single-input, parameter-free ops (reshape, permute, dropout, activation)."""
        records = self.records
        while records[index].op in ("other", "gate") and len(records[index].inputs) == 1 and not records[index].params:
            index = records[index].inputs[0]
        return index

    def source(self, index: int) -> int:
        """Like :meth:`plain`, also over ops reading buffers (input clamps): where a tensor came from."""
        records = self.records
        while records[index].op == "other" and len(records[index].inputs) == 1:
            index = records[index].inputs[0]
        return index

    def edge(self, src: int, dst: int, gated: bool, merge: str) -> None:
        if src >= dst:  # a module called again later (weight sharing) adds no back edge
            return
        old = self.edges.get((src, dst))
        if old is not None:
            gated, merge = old[0] and gated, "" if "" in (old[1], merge) else old[1]
        self.edges[(src, dst)] = (gated, merge)

    def run(self) -> None:
        for i, rec in enumerate(self.records):
            ins = [j for j in rec.inputs if j < i]
            red = max((self.reduction[j] for j in ins), default=1)
            res = _resolution(rec) if rec.op == "layer" else None
            # A 1x1 map after global pooling is not a new stage (conv_head in MobileNetV3 works on
            # pooled features): only maps wider than 1 pixel set the resolution.
            if res and res > 1 and self.in_res:
                red = max(1, round(self.in_res / res))
            self.reduction.append(red)
            self.dep.append(rec.op == "input" or any(self.dep[j] for j in ins))
            if rec.op == "layer":
                self.layer(i, rec, ins, red)
            else:
                self.op(i, rec, ins)

    def layer(self, i: int, rec: OpRecord, ins: list[int], red: int) -> None:
        node = self.node_of.get(rec.module)
        if node is None:
            node = self.node_of[rec.module] = len(self.protos)
            self.protos.append((rec, red, self.dep[i]))
            self.layer_inputs.append(tuple(self.source(j) for j in ins))
        self.layer_at[i] = node
        self.extra.setdefault(node, {}).update(dict.fromkeys(rec.params))  # every call's tensors
        for up, (gated, merge) in _combine([self.reach[j] for j in ins], [False] * len(ins), "").items():
            self.edge(up, node, gated, merge)
        source = self.source(ins[0]) if ins else None
        if source is not None and self.records[source].op == "norm":
            self.pre_norm.setdefault(node, self.records[source].module)
        self.reach.append({node: (False, "")})

    def op(self, i: int, rec: OpRecord, ins: list[int]) -> None:
        merging = len(ins) > 1 and rec.op in ("mul", "add", "cat", "matmul", "other", "rnn")
        gates = _gates(self.records, rec, ins, self.plain) if rec.op == "mul" and merging else [False] * len(ins)
        if merging and rec.op in ("mul", "matmul"):
            self.siblings(ins, gates)
        self.reach.append(_combine([self.reach[j] for j in ins], gates, rec.op if merging else ""))
        if rec.op == "norm" and ins:
            source = self.plain(ins[0])  # post-norm: straight on the layer's output
            if source in self.layer_at:
                self.post_norm.setdefault(self.layer_at[source], rec.module)
        if rec.op == "output":
            self.outputs.update(self.reach[-1])
            self.output_merge.update({layer: merge for layer, (_, merge) in self.reach[-1].items()})

    def siblings(self, ins: list[int], gates: list[bool]) -> None:
        """Layers that read one tensor and meet in a product (q/k/v, SwiGLU) are chained in order."""
        groups: dict[tuple[int, ...], dict[int, int]] = {}
        for j, gate in zip(ins, gates, strict=True):
            for layer, (gated, _) in self.reach[j].items():
                if not gate and not gated and self.layer_inputs[layer]:
                    groups.setdefault(self.layer_inputs[layer], {}).setdefault(layer, j)
        for members in groups.values():
            if len(set(members.values())) > 1:  # the layers feed different operands
                ordered = sorted(members)
                for a, b in pairwise(ordered):
                    self.edge(a, b, False, "sibling")


def build_layer_graph(
    trace: Trace,
    model_name: str,
    head_names: tuple[str, ...],
    param_shapes: Mapping[str, tuple[int, ...]],
    norm_paths: Mapping[str, tuple[str, ...]],
) -> LayerGraph:
    """Pure: records -> layers, edges, attached norms, head."""
    b = _Builder(trace)
    b.run()
    if not b.protos:
        raise UnsupportedModel(f"{model_name}: no conv or linear layer with a weight parameter was executed")
    attached: set[str] = set()
    layers: list[LayerNode] = []
    for index, (rec, red, _) in enumerate(b.protos):
        norm = b.post_norm.get(index)
        follows = norm is not None
        if norm is None and b.pre_norm.get(index) not in attached:
            norm = b.pre_norm.get(index)  # pre-norm (transformers): the norm right before the layer
        if norm:
            attached.add(norm)
        extra = tuple(p for p in b.extra[index] if p not in (rec.weight, rec.bias))
        layers.append(LayerNode(
            index=index, path=rec.module, kind=layer_kind(rec.weight_shape, rec.groups), weight=rec.weight,
            bias=rec.bias, shape=rec.weight_shape, groups=rec.groups, stride=rec.stride, reduction=red,
            norm=norm, norm_keys=norm_paths.get(norm, ()) if norm else (), norm_follows=follows, extra_keys=extra,
        ))
    return _graph(trace, model_name, b, tuple(layers), _head(layers, head_names, b), param_shapes, norm_paths)


def _head(layers: Sequence[LayerNode], head_names: tuple[str, ...], b: _Builder) -> frozenset[int]:
    """The classifier named by the model's cfg; without a cfg, a final linear giving (batch, classes)."""
    if head_names:  # a cfg that names a classifier the model lacks (num_classes=0) means: no head
        return frozenset(n.index for n in layers if any(n.path == h or n.path.startswith(h + ".") for h in head_names))
    feeds = {src for src, _ in b.edges}
    return frozenset(
        n for n in b.outputs if layers[n].kind == "linear" and n not in feeds and len(b.protos[n][0].shape) == 2
    )


def _graph(trace: Trace, model_name: str, b: _Builder, layers: tuple[LayerNode, ...], head: frozenset[int],
           param_shapes: Mapping[str, tuple[int, ...]], norm_paths: Mapping[str, tuple[str, ...]]) -> LayerGraph:
    return LayerGraph(
        model=model_name, extractor=trace.extractor, input_shape=trace.input_shape, layers=layers,
        edges=tuple(Edge(s, d, g, m) for (s, d), (g, m) in sorted(b.edges.items())), head=head,
        outputs=frozenset(b.outputs), param_shapes=dict(param_shapes), params_used=trace.params_used,
        norms=dict(norm_paths), constant=frozenset(i for i, (_, _, dep) in enumerate(b.protos) if not dep),
        param_ops=dict(trace.param_ops), aliases=dict(trace.aliases), guesses=trace.guesses,
        output_merge=dict(b.output_merge),
    )

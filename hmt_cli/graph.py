"""``nn.Module`` -> :class:`LayerGraph`: weight layers and the dataflow edges between them.

A *weight layer* is a conv (1d/2d/3d, any groups) or linear op whose weight is a parameter of the
model, whether called as a module or functionally. An edge ``u -> v`` means the output of ``u``
reaches the data input of ``v`` through ops that are not weight layers. An edge is *gated* when
every such route passes the broadcast side of an elementwise multiply, or a sigmoid/softmax output
into one: squeeze-excite, ECA and CBAM branches feed the main stream only through such gates.
Its ``merge`` names the first op on the route that combined streams (``add``, ``cat``, ``mul``,
``matmul``), which tells a residual shortcut from a concatenated branch; ``sibling`` edges join
layers that read the same tensor and meet in a product (separate q/k/v, SwiGLU halves).

See ``docs/chain.md`` for the exact rules.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

from .errors import UnsupportedModel

__all__ = ["OpRecord", "Trace", "LayerNode", "Edge", "LayerGraph", "extract_graph", "layer_kind"]


@dataclass(frozen=True)
class OpRecord:
    """One executed op. ``op``: input | layer | norm | mul | add | cat | matmul | gate | rnn | other | output.

    ``mul``/``add``/``cat``/``matmul`` are recorded only where two or more data streams meet.
    """

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
    param_ops: Mapping[str, str] = field(default_factory=dict)  # key -> kind of the first op that read it
    aliases: Mapping[str, str] = field(default_factory=dict)  # tied parameter's second name -> first
    guesses: int = 0  # data-dependent values the exec extractor had to guess


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
    norm_follows: bool = False  # the norm normalizes this layer's output (post-norm), not its input (pre-norm)
    extra_keys: tuple[str, ...] = ()  # other tensors the layer op read (q_bias/v_bias, a weight gain)


@dataclass(frozen=True)
class Edge:
    src: int
    dst: int
    gated: bool = False
    merge: str = ""  # first stream-combining op on the route: "" | add | cat | mul | matmul | other | sibling


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
    constant: frozenset[int] = frozenset()  # layers computed from parameters alone (position MLPs)
    unused_layers: tuple[LayerNode, ...] = ()  # conv/linear modules the forward never called
    param_ops: Mapping[str, str] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    buffers: frozenset[str] = frozenset()  # state-dict keys that are buffers, not parameters
    guesses: int = 0
    output_merge: Mapping[int, str] = field(default_factory=dict)  # output layer -> merge on its route out

    @cached_property
    def _by_path(self) -> dict[str, LayerNode]:
        return {n.path: n for n in (*self.layers, *self.unused_layers)}

    def layer(self, path: str) -> LayerNode:
        try:
            return self._by_path[path]
        except KeyError:
            raise KeyError(path) from None

    @cached_property
    def bypassed(self) -> frozenset[int]:
        """Layers some route avoids: an edge jumps from before them to after them (a residual shortcut,
        a parallel branch). The others are cuts of the graph, which every signal from input to output
        passes. Layer indices are execution order, a topological order, so one sweep finds them."""
        reach, out = -1, set()
        starts = sorted((e.src, e.dst) for e in self.edges)
        i = 0
        for layer in sorted(n.index for n in self.layers):
            while i < len(starts) and starts[i][0] < layer:
                reach = max(reach, starts[i][1])
                i += 1
            if reach > layer:
                out.add(layer)
        return frozenset(out)

    @cached_property
    def closes_residual(self) -> frozenset[int]:
        """Layers whose output reaches every consumer through an add: the last layer of a residual branch."""
        outs: dict[int, list[Edge]] = {}
        for e in self.edges:
            if not e.gated:
                outs.setdefault(e.src, []).append(e)
        return frozenset(i for i, es in outs.items() if all(e.merge == "add" for e in es))

    @cached_property
    def widest(self) -> int:
        """The most output channels (features) of any weight layer outside the classifier head; 0 if none.
        Cached: a strategy that decides by it asks once per layer pair."""
        return max((n.shape[0] for n in self.layers if n.index not in self.head), default=0)


def layer_kind(shape: tuple[int, ...], groups: int) -> str:
    if len(shape) == 2:
        return "linear"
    if groups == 1:
        return "conv"
    out_channels, in_per_group = shape[0], shape[1]
    if in_per_group == 1 and out_channels % groups == 0:
        return "depthwise"
    return "grouped"


def _norm_paths(model: object) -> dict[str, tuple[str, ...]]:
    from .trace import is_norm

    paths: dict[str, tuple[str, ...]] = {}
    for path, module in model.named_modules():  # type: ignore[attr-defined]
        if path and is_norm(module):  # a norm's own tensors (named_parameters per module is slow)
            tensors = {**module._parameters, **module._buffers}
            paths[path] = tuple(f"{path}.{n}" for n, t in tensors.items() if t is not None)
    return paths


def _unused_layers(model: object, graph: LayerGraph) -> tuple[LayerNode, ...]:
    """Conv/linear modules the traced forward never ran (aux heads, train-only branches)."""
    from .trace import is_weight_layer

    seen = {n.path for n in graph.layers} | set(graph.params_used)
    nodes = []
    for path, module in model.named_modules():  # type: ignore[attr-defined]
        weight_key = graph.aliases.get(f"{path}.weight", f"{path}.weight")  # a tied weight counts as used
        if path and is_weight_layer(module) and path not in seen and weight_key not in seen:
            weight = module._parameters.get("weight")
            if weight is None:
                continue
            bias = f"{path}.bias" if module._parameters.get("bias") is not None else None
            groups = int(getattr(module, "groups", 1))
            nodes.append(LayerNode(len(graph.layers) + len(nodes), path, layer_kind(tuple(weight.shape), groups),
                                   f"{path}.weight", bias, tuple(weight.shape), groups))
    return tuple(nodes)


def _input_shapes(model: object) -> list[tuple[int, ...]]:
    """The model's own input size first, then other sizes its config allows."""
    from .models import input_size

    shapes = [tuple(input_size(model))]  # type: ignore[arg-type]
    cfg = getattr(model, "pretrained_cfg", None) or {}
    for key in ("test_input_size", "min_input_size"):
        if cfg.get(key):
            shapes.append(tuple(int(s) for s in cfg[key]))
    shapes.append((shapes[0][0], 224, 224))
    return list(dict.fromkeys(shapes))


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Tracing allocates ~10^5 short-lived objects; a full collection mid-trace costs ~300 ms."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _trace(model: object, model_name: str, extractor: str) -> Trace:
    """Try each extractor at each candidate input size; the first that runs wins."""
    from .trace import record_exec, record_fx

    order = {"auto": (record_fx, record_exec), "fx": (record_fx,), "exec": (record_exec,)}[extractor]
    failures: list[str] = []
    for record in order:
        for shape in _input_shapes(model):
            try:
                return record(model, shape)  # type: ignore[arg-type]
            except Exception as exc:  # any tracing failure moves on to the next size or extractor
                failures.append(f"{record.__name__.removeprefix('record_')}: {type(exc).__name__}: {exc}")
    detail = "; ".join(dict.fromkeys(f.splitlines()[0][:200] for f in failures))
    raise UnsupportedModel(f"cannot extract the graph of {model_name}: {detail}",
                           hint="docs/chain.md lists what each extractor needs; another input size may trace "
                                "(--arg img_size=N)")


def extract_graph(model: object, model_name: str, extractor: str = "auto") -> LayerGraph:
    """Trace ``model`` (build it on the meta device) into a :class:`LayerGraph`.

    ``extractor``: ``fx``, ``exec`` or ``auto`` (fx first, exec where fx fails). Raises
    :class:`UnsupportedModel` naming each extractor's failure when none works.
    """
    from ._graph_build import build_layer_graph
    from .models import classifier_names

    start = time.perf_counter()
    with _gc_paused():
        trace = _trace(model, model_name, extractor)
        state = model.state_dict(keep_vars=True)  # type: ignore[attr-defined]
        params = {n for n, _ in model.named_parameters(remove_duplicate=False)}  # type: ignore[attr-defined]
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        graph = build_layer_graph(trace, model_name, classifier_names(model), shapes, _norm_paths(model))  # type: ignore[arg-type]
        graph = replace(graph, buffers=frozenset(k for k in state if k not in params))
        graph = replace(graph, unused_layers=_unused_layers(model, graph))
    return replace(graph, seconds=time.perf_counter() - start)

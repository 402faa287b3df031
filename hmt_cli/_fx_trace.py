"""torch.fx for the ``fx`` extractor: a fast symbolic tracer and a node-by-node graph runner.

The tracer uses timm's no-trace registry (leaf modules, autowrapped functions) and treats weight
layers and norms as leaves. Three costs of stock fx are avoided: leaf decisions and parameter names
are computed once per model (fx asks per call, scanning every parameter), tuple unpacking of
proxies reads cached bytecode (fx disassembles the caller each time), and the graph runs without
``GraphModule`` code generation or ``Interpreter`` dispatch.
"""

from __future__ import annotations

import dis
import functools
import inspect
import sys
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .trace import is_norm, is_weight_layer

__all__ = ["trace_graph", "run_graph"]


@functools.lru_cache(maxsize=4096)
def _unpacks(code: Any) -> tuple[list[int], list[int | None]]:
    """Bytecode offsets of ``code`` and, where the instruction is UNPACK_SEQUENCE, its count."""
    insts = list(dis.get_instructions(code))
    return [i.offset for i in insts], [i.argval if i.opname == "UNPACK_SEQUENCE" else None for i in insts]


class _FastIter:
    """``q, k, v = proxy`` and ``B, N, C = x.shape`` resolved from cached bytecode (fx disassembles
    the calling function on every unpacking, ~2 ms each in a large forward)."""

    tracer: Any

    def __iter__(self) -> Iterator[fx.Proxy]:
        frame = sys._getframe(1)
        offsets, counts = _unpacks(frame.f_code)
        at = bisect_left(offsets, frame.f_lasti) if sys.version_info >= (3, 11) else frame.f_lasti // 2
        if counts[at] is not None:
            return (self[i] for i in range(counts[at]))  # type: ignore[index]
        return self.tracer.iter(self)

    def __getattr__(self, k: str) -> fx.Proxy:
        return _Attribute(self, k)


class _Proxy(_FastIter, fx.Proxy):
    pass


class _Attribute(_FastIter, fx.proxy.Attribute):
    pass


class _LeafTracer(fx.Tracer):
    """fx tracer: timm's no-trace modules, weight layers and norms are leaves; fast attribute lookup."""

    def __init__(self, model: nn.Module) -> None:
        from timm.layers import get_notrace_functions, get_notrace_modules

        super().__init__(autowrap_functions=tuple(f for f in get_notrace_functions() if callable(f)))
        notrace = tuple(get_notrace_modules())
        base = fx.Tracer.is_leaf_module
        # Decided once per module: fx asks at every call, and getattr is patched during tracing.
        self._leaves = {
            id(m) for path, m in model.named_modules()
            if isinstance(m, notrace) or is_norm(m) or is_weight_layer(m) or base(self, m, path)
        }
        self._param_names = {id(t): n for n, t in model.named_parameters()}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self._leaves

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _Proxy(node, self)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        # fx's own lookup scans every named parameter of the model on each access. Buffers stay
        # concrete meta tensors (fx's default), so ``assert buf.numel() == dim`` still traces.
        name = self._param_names.get(id(attr_val)) if isinstance(attr_val, nn.Parameter) else None
        if name is None:
            return attr_val
        if name not in parameter_proxy_cache:
            parameter_proxy_cache[name] = self.create_proxy("get_attr", name, (), {})
        return parameter_proxy_cache[name]


def _defaults(model: nn.Module) -> dict[str, Any]:
    """Optional forward arguments (``mask=None``) stay constants: as proxies they take every branch."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def run_graph(graph: fx.Graph, model: nn.Module, x: torch.Tensor) -> Any:
    """Evaluate an fx graph node by node (no GraphModule codegen, no Interpreter overhead)."""
    env: dict[fx.Node, Any] = {}
    modules = dict(model.named_modules())
    first = True
    for node in graph.nodes:
        if node.op == "placeholder":
            value, first = (x if first else (node.args[0] if node.args else None)), False
        elif node.op == "get_attr":
            value = _attr(model, node.target)
        elif node.op == "output":
            return fx.node.map_arg(node.args[0], env.__getitem__)
        else:
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.op == "call_function":
                value = node.target(*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:
                value = modules[node.target](*args, **kwargs)
        env[node] = value
    return None


def _attr(model: nn.Module, target: str) -> Any:
    value: Any = model
    for part in target.split("."):
        value = getattr(value, part)
    return value


def trace_graph(model: nn.Module) -> fx.Graph:
    return _LeafTracer(model).trace(model, concrete_args=_defaults(model))

"""DPIAT (Czyzewski et al., "Breaking the Architecture Barrier", 2022) as a benchmark peer.

Install (optional ``peers`` extra; never a dependency of hmt)::

    pip install --no-deps iatransfer==1.0.3

``--no-deps`` because the package declares heavy dependencies (karateclub, graphviz, networkx,
scikit-learn, efficientnet-pytorch, ...) that only its non-default plug-ins import. Its
``iatransfer.toolkit/__init__`` imports *every* plug-in through ``loader.find_module(...).load_module``,
an import API Python 3.12 removed. So this adapter never runs that ``__init__``: it registers the
package as an empty namespace and imports exactly the plug-ins of the default configuration
(block standardization, dynamic-programming matching, shape score, centre clip/pad transfer).
The one light runtime import of the default path, ``inflection.camelize`` (plug-in name lookup), is
stubbed with an equivalent when ``inflection`` is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["INSTALL_HINT", "DpiatUnavailable", "load_iat", "dpiat_transfer"]

INSTALL_HINT = "pip install --no-deps iatransfer==1.0.3"

# The plug-ins IAT() uses with its default arguments: ('blocks', 'dp', 'clip', 'ShapeScore').
_DEFAULT_PLUGINS = (
    "iatransfer.toolkit.standardization.blocks_standardization",
    "iatransfer.toolkit.matching.dp_matching",
    "iatransfer.toolkit.transfer.clip_transfer",
    "iatransfer.toolkit.score.shape_score",
)


class DpiatUnavailable(RuntimeError):
    """iatransfer is not installed or could not be imported; the benchmark records the peer as skipped."""


def _camelize(text: str, uppercase_first_letter: bool = True) -> str:
    # Same result as inflection.camelize for the identifiers IAT looks up.
    out = re.sub(r"(?:^|_)(.)", lambda m: m.group(1).upper(), text)
    return out if uppercase_first_letter else text[:1].lower() + out[1:]


def _ensure_inflection() -> None:
    if "inflection" in sys.modules or importlib.util.find_spec("inflection") is not None:
        return
    stub = types.ModuleType("inflection")
    stub.camelize = _camelize  # type: ignore[attr-defined]
    sys.modules["inflection"] = stub


def _register_namespace(name: str) -> None:
    """Make ``name`` importable as a package without executing its ``__init__``."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name.rpartition(".")[0] or name) if "." in name else None
    parent_paths = list(spec.submodule_search_locations or []) if spec else []
    leaf = name.rpartition(".")[2]
    paths = [f"{p}/{leaf}" for p in parent_paths]
    module = types.ModuleType(name)
    module.__path__ = paths  # type: ignore[attr-defined]
    module.__package__ = name
    sys.modules[name] = module


def load_iat() -> type:
    """Import ``iatransfer.toolkit.iat.IAT`` with only the default plug-ins loaded."""
    if importlib.util.find_spec("iatransfer") is None:
        raise DpiatUnavailable(f"iatransfer is not installed ({INSTALL_HINT})")
    try:
        _ensure_inflection()
        _register_namespace("iatransfer.toolkit")
        for plugin in _DEFAULT_PLUGINS:
            importlib.import_module(plugin)
        return importlib.import_module("iatransfer.toolkit.iat").IAT
    except Exception as exc:  # a broken third-party install must not crash the benchmark
        raise DpiatUnavailable(f"importing iatransfer failed: {type(exc).__name__}: {exc}") from exc


def dpiat_transfer(source_model: nn.Module, target_model: nn.Module) -> Any:
    """Copy ``source_model``'s weights into ``target_model`` in place with ``IAT()``'s defaults.

    Returns IAT's ``TransferStats``. The classifier head is transferred too when shapes allow; the
    benchmark re-initializes it afterwards (fresh head for every init).
    """
    import torch

    iat_cls = load_iat()
    with torch.no_grad():
        return iat_cls()(source_model, target_model)

"""Pretrained source weights through timm's normal loading, failing fast when offline.

huggingface_hub retries for ~45 s before giving up on an unreachable hub; a pipeline step should
instead fail in seconds with what to do. So: use the local cache when it has the file; otherwise
probe the endpoint once (3 s) before letting timm download.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlparse

from .errors import WeightsUnavailable
from .io import DictSource
from .models import ModelSpec, build_model

__all__ = ["ensure_available", "load_pretrained", "reachable"]

PROBE_SECONDS = 3.0
_HINT = "pass --src-weights PATH, or download once while online and rerun with HF_HUB_OFFLINE=1"
_HINT_OFFLINE = "pass --src-weights PATH, or download once while online (without HF_HUB_OFFLINE) to fill the cache"


def reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Can we open a TCP connection to ``url``'s host? DNS included, bounded by ``timeout``."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    # getaddrinfo ignores socket timeouts, so bound the whole probe with a daemon thread.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def _cached(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str):
            return True
    return False


def ensure_available(spec: ModelSpec) -> str:
    """Fail in seconds, before any download or model build, unless the weights are cached or reachable.

    Returns the weights' identity (``hub:org/repo`` or ``url:...``) for the output's metadata.
    """
    if not spec.is_timm:
        raise WeightsUnavailable(
            f"{spec.name} is a custom factory: hmt cannot know its pretrained weights",
            hint="pass --src-weights PATH",
        )
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    name = spec.name.removeprefix("hf-hub:").removeprefix("hf_hub:")
    cfg = None if spec.name.startswith(("hf-hub:", "hf_hub:")) else get_pretrained_cfg(name)
    hub_id = name if cfg is None else (cfg.hf_hub_id or "")
    url = "" if cfg is None else (cfg.url or "")
    if cfg is not None and not (hub_id or url or cfg.file):
        raise WeightsUnavailable(f"timm has no pretrained weights for {spec.name}", hint="pass --src-weights PATH")
    if hub_id and not _cached(hub_id):
        if _offline():
            raise WeightsUnavailable(
                f"{hub_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set", hint=_HINT_OFFLINE
            )
        if not reachable(constants.ENDPOINT):
            raise WeightsUnavailable(f"cannot reach {constants.ENDPOINT} to download {hub_id}", hint=_HINT)
    elif not hub_id and url and not reachable(url):
        raise WeightsUnavailable(f"cannot reach {urlparse(url).hostname} to download {spec.name}", hint=_HINT)
    return f"hub:{hub_id}" if hub_id else f"url:{url}"


def load_pretrained(spec: ModelSpec) -> DictSource:
    """The source's pretrained state dict via ``timm.create_model(pretrained=True)``."""
    identity = ensure_available(spec)
    try:
        model = build_model(spec, device="cpu", pretrained=True)
    except OSError as exc:  # network and cache errors (huggingface_hub's included) are OSError subclasses
        raise WeightsUnavailable(f"downloading weights for {spec.name} failed: {exc}", hint=_HINT) from None
    except RuntimeError as exc:  # a cached file that torch/safetensors cannot read
        raise WeightsUnavailable(f"loading pretrained weights for {spec.name} failed: {exc}", hint=_HINT) from None
    return DictSource(model.state_dict(), identity=identity)

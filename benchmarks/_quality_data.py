"""Data for the quality benchmark: decode the shared datasets once, keep them on the device as uint8.

Everything the training loop touches is a :class:`ImageSet` of uint8 ``(N, 3, H, W)`` images already at
the working resolution plus int64 labels, living on the training device. Augmentation (random crop with
zero padding + horizontal flip) is a single gather on that tensor, driven by a CPU ``torch.Generator`` so
the data order and crops are identical on CPU and CUDA for a given seed.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DataSpec",
    "ImageSet",
    "resolve_shared",
    "load_split",
    "augment",
    "normalize",
    "MEAN",
    "STD",
]

# ImageNet statistics for every model: timm's defaults, and what the CIFAR ResNets were trained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

_REPO_ROOT = Path(__file__).resolve().parents[1]
_FMNIST_SPLIT_SEED = 20240601  # fixes which Fashion-MNIST images are the few-shot pool vs held out


@dataclass(frozen=True)
class DataSpec:
    """One labelled image set: which file, which classes, how many images per class."""

    name: str
    dataset: str  # "cifar10" | "fashion_mnist"
    classes: tuple[int, ...] = tuple(range(10))
    train_per_class: int | None = None  # None = every training image of those classes
    eval_per_class: int | None = None  # None = the whole evaluation split of those classes

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class ImageSet:
    x: torch.Tensor  # uint8 (N, 3, H, W) on the training device
    y: torch.Tensor  # int64 (N,), labels remapped to 0..num_classes-1

    def __len__(self) -> int:
        return int(self.y.shape[0])


def resolve_shared(cli_value: str | Path | None = None) -> Path:
    """``--shared`` beats ``$HMT_SHARED`` beats ``../shared`` next to the repository."""
    raw = cli_value or os.environ.get("HMT_SHARED") or _REPO_ROOT.parent / "shared"
    return Path(raw).expanduser().resolve()


@lru_cache(maxsize=4)
def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as blob:  # no pickles in these files
        return {k: blob[k] for k in blob.files}


def _decode_jpegs(buf: np.ndarray, offsets: np.ndarray, idx: np.ndarray) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(idx), 32, 32, 3), dtype=np.uint8)
    for row, i in enumerate(idx):
        blob = buf[offsets[i] : offsets[i + 1]].tobytes()
        out[row] = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
    return out


def _per_class_pick(
    labels: np.ndarray, classes: Sequence[int], k: int | None, rng: np.random.Generator
) -> np.ndarray:
    """``k`` random indices of each class (all of them when ``k`` is None), in class order."""
    picks = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        picks.append(
            pool if k is None or k >= len(pool) else np.sort(rng.choice(pool, size=k, replace=False))
        )
    return np.concatenate(picks)


def _fmnist_pool(labels: np.ndarray, train: bool) -> np.ndarray:
    # Only the 10k test split is staged: a fixed half of each class is the few-shot pool, the rest is held
    # out, so no evaluation image is ever a training image whatever the seed.
    rng = np.random.default_rng(_FMNIST_SPLIT_SEED)
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        half = len(idx) // 2
        keep[idx[:half] if train else idx[half:]] = True
    return keep


def _raw_split(
    shared: Path, spec: DataSpec, train: bool, k: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) images and original labels of the requested subset."""
    rng = np.random.default_rng(seed)
    if spec.dataset == "cifar10":
        blob = _npz(shared / "data" / "cifar10_jpeg.npz")
        split = "train" if train else "test"
        labels = blob[f"{split}_labels"].astype(np.int64)
        idx = _per_class_pick(labels, spec.classes, k, rng)
        return _decode_jpegs(blob[f"{split}_jpeg"], blob[f"{split}_offsets"], idx), labels[idx]
    if spec.dataset == "fashion_mnist":
        blob = _npz(shared / "data" / "fashion_mnist_test.npz")
        labels = blob["test_labels"].astype(np.int64)
        masked = np.where(_fmnist_pool(labels, train), labels, -1)
        idx = _per_class_pick(masked, spec.classes, k, rng)
        gray = blob["test_images"][idx]
        # Grayscale replicated to 3 channels, zero-padded 28 -> 32 px like the CIFAR images.
        rgb = np.repeat(np.pad(gray, ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)
        return rgb, labels[idx]
    raise ValueError(f"unknown dataset {spec.dataset!r} (expected cifar10 or fashion_mnist)")


def load_split(
    shared: Path, spec: DataSpec, *, train: bool, seed: int, img_size: int, device: torch.device
) -> ImageSet:
    """The training shots (drawn with ``seed``) or the fixed evaluation subset, on ``device``.

    The evaluation subset does not depend on the run's seed: every run of a benchmark is scored on the
    same images.
    """
    k = spec.train_per_class if train else spec.eval_per_class
    images, labels = _raw_split(shared, spec, train, k, seed if train else 0)
    remap = {c: i for i, c in enumerate(spec.classes)}
    y = torch.tensor([remap[int(v)] for v in labels], dtype=torch.int64)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    x = _resize_uint8(x, img_size)
    return ImageSet(x.to(device), y.to(device))


def _resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    parts = [
        F.interpolate(x[i : i + chunk].float(), size=(size, size), mode="bilinear", align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for i in range(0, len(x), chunk)
    ]
    return torch.cat(parts)


def augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool) -> torch.Tensor:
    """Random crop of the zero-padded batch + horizontal flip, as one gather; uint8 in, uint8 out.

    Offsets and flips come from the CPU generator ``gen`` whatever the device, so a seed gives the same
    crops on CPU and CUDA.
    """
    n, _, h, w = x.shape
    if pad <= 0 and not flip:
        return x
    padded = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    mirror = torch.rand(n, generator=gen) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(mirror[:, None], (w - 1) - cols, cols) + dx[:, None]
    rows = torch.arange(h).expand(n, h) + dy[:, None]
    dev = x.device
    b = torch.arange(n, device=dev)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: (n, h, w, c) -> back to (n, c, h, w).
    out = padded[b, :, rows.to(dev)[:, :, None], cols.to(dev)[:, None, :]]
    return out.permute(0, 3, 1, 2)


def normalize(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1) * 255
    out = (x.float() - mean) / std
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out.contiguous()

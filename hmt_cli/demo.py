"""``hmt demo``: the whole idea offline in about a minute on a laptop CPU.

Real data, real transfer path: train a small source on half the classes of a real image set
(scikit-learn's bundled handwritten digits, or ``--data`` .npz), transfer it into a *different*
architecture with :func:`hmt_cli.pipeline.transfer` (exactly what ``hmt transfer`` runs), then
fine-tune the target from scratch and from the transfer on a few images of the *other* classes
and compare held-out accuracy.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError
from .options import DEFAULT_STRATEGY, TransferOptions
from .pipeline import transfer
from .report import TransferReport

__all__ = ["DemoConfig", "DemoResult", "run_demo", "load_images"]


@dataclass(frozen=True)
class DemoConfig:
    data: Path | None = None  # .npz with `images` (N, H, W[, C]) uint8 and `labels` (N,)
    src: str = "test_resnet"
    tgt: str = "test_efficientnet"
    strategy: str = DEFAULT_STRATEGY
    size: int = 32
    src_epochs: int = 15
    tgt_epochs: int = 30
    shots: int = 10  # training images per target class
    seed: int = 0


@dataclass(frozen=True)
class DemoResult:
    src_acc: float  # source on held-out images of its own classes
    scratch_acc: float
    transfer_acc: float
    report: TransferReport
    seconds: float


def load_images(path: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> float images (N, 3, H, W) in [0, 1] and int64 labels."""
    import numpy as np

    if path is None:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise UsageError("the demo's default data needs scikit-learn",
                             hint="pip install -e '.[demo]', or pass --data FILE.npz") from None
        digits = load_digits()
        images, labels = digits.images / 16.0, digits.target
    else:
        try:
            with np.load(path) as npz:
                images, labels = npz["images"].astype("float32"), npz["labels"]
        except (OSError, KeyError, ValueError) as exc:
            raise UsageError(f"--data {path}: expected an .npz with 'images' and 'labels' arrays ({exc})") from None
        images = images / max(float(images.max()), 1.0)
    x = torch.as_tensor(images, dtype=torch.float32)
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x, torch.as_tensor(labels).long()


def _prepare(x: torch.Tensor, size: int) -> torch.Tensor:
    return (F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) - 0.5) / 0.25


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int, lr: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * max(1, (len(x) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i : i + 64]
            if len(idx) < 2:
                continue
            batch = x[idx]
            shift = torch.randint(-2, 3, (2,), generator=gen).tolist()  # cheap translation augmentation
            batch = torch.roll(batch, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(model(batch), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def _split(y: torch.Tensor, classes: list[int], shots: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    train, test = [], []
    for c in classes:
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        train.append(idx[:shots])
        test.append(idx[shots:])
    return torch.cat(train), torch.cat(test)


def run_demo(cfg: DemoConfig, log: callable = print) -> DemoResult:  # type: ignore[valid-type]
    import timm

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    images, labels = load_images(cfg.data)
    x = _prepare(images, cfg.size)
    classes = sorted(int(c) for c in labels.unique())
    if len(classes) < 4:
        raise UsageError(f"the demo needs at least 4 classes, the data has {len(classes)}")
    half = len(classes) // 2
    src_classes, tgt_classes = classes[:half], classes[half:]
    gen = torch.Generator().manual_seed(cfg.seed)
    remap = {c: i for i, c in enumerate(src_classes)} | {c: i for i, c in enumerate(tgt_classes)}
    y = torch.tensor([remap[int(v)] for v in labels])

    src_train, src_test = _split(labels, src_classes, 10**9, gen)  # all images, split below
    src_test, src_train = src_train[::5], torch.cat([src_train[i::5] for i in range(1, 5)])
    log(f"[1/3] training source {cfg.src} on classes {src_classes} ({len(src_train)} images) ...")
    source = timm.create_model(cfg.src, num_classes=len(src_classes))
    _train(source, x[src_train], y[src_train], cfg.src_epochs, cfg.seed, lr=0.05)
    src_acc = _accuracy(source, x[src_test], y[src_test])
    log(f"      source accuracy on held-out images of its classes: {src_acc:.1%}")

    tgt_train, tgt_test = _split(labels, tgt_classes, cfg.shots, gen)
    with tempfile.TemporaryDirectory() as tmp:
        src_file, out = Path(tmp) / "source.safetensors", Path(tmp) / "init.safetensors"
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(src_file))
        log(f"[2/3] hmt transfer --src {cfg.src} --tgt {cfg.tgt} --strategy {cfg.strategy} ...")
        report = transfer(TransferOptions(src=cfg.src, tgt=cfg.tgt, out=out, src_weights=src_file,
                                          num_classes=len(tgt_classes), strategy=cfg.strategy, seed=cfg.seed,
                                          device="cpu", src_kwargs={"num_classes": len(src_classes)}))
        from safetensors.torch import load_file

        transferred_state = load_file(str(out))

    log(f"[3/3] fine-tuning {cfg.tgt} on classes {tgt_classes}, {cfg.shots} images each, "
        f"scratch vs transferred ...")
    accs = {}
    for init in ("scratch", "transfer"):
        torch.manual_seed(cfg.seed)
        model = timm.create_model(cfg.tgt, num_classes=len(tgt_classes))
        if init == "transfer":
            model.load_state_dict(transferred_state, strict=True)
        _train(model, x[tgt_train], y[tgt_train], cfg.tgt_epochs, cfg.seed + 1, lr=0.02)
        accs[init] = _accuracy(model, x[tgt_test], y[tgt_test])
    return DemoResult(src_acc, accs["scratch"], accs["transfer"], report, time.perf_counter() - start)

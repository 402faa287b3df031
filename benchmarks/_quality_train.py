"""The one training loop of the quality benchmark: pre-training a source/upper model and few-shot fine-tuning.

SGD (+ Nesterov), per-step cosine schedule with optional linear warm-up, weight decay on weight matrices
only (not on norms and biases), GPU-side crop+flip augmentation, bf16 autocast and channels_last on CUDA.
No DataLoader: the images already live on the device (see :mod:`benchmarks._quality_data`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._quality_data import ImageSet, augment, normalize

__all__ = ["Recipe", "Runtime", "TrainResult", "train", "accuracy"]


@dataclass(frozen=True)
class Recipe:
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    crop_pad: int = 4  # pixels at the working resolution
    flip: bool = True
    early_epoch: int | None = None  # acc_early is read after this epoch
    eval_every: int = 1  # curve resolution; the early and final epochs are always evaluated

    def eval_epochs(self) -> set[int]:
        epochs = {e for e in range(1, self.epochs + 1) if e % max(self.eval_every, 1) == 0}
        epochs.add(self.epochs)
        if self.early_epoch and self.early_epoch <= self.epochs:
            epochs.add(self.early_epoch)
        return epochs


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp: bool  # bf16 autocast (CUDA only)
    channels_last: bool
    eval_batch: int = 1000


@dataclass(frozen=True)
class TrainResult:
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epoch, top-1 on the eval set)
    epochs_done: int = 0
    train_s: float = 0.0
    eval_s: float = 0.0
    final_train_loss: float = float("nan")

    def acc_at(self, epoch: int | None) -> float | None:
        hits = [acc for e, acc in self.curve if e == epoch]
        return hits[0] if hits else None


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=gen)
    chunks = list(order.split(batch_size))
    # BatchNorm cannot train on a single sample (1x1 feature maps): fold a size-1 tail into its neighbour.
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def accuracy(model: nn.Module, data: ImageSet, rt: Runtime) -> float:
    """Top-1 accuracy as a fraction in [0, 1]; the model comes back in train mode."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=rt.device)
    for start in range(0, len(data), rt.eval_batch):
        x = normalize(data.x[start : start + rt.eval_batch], rt.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=rt.amp):
            logits = model(x)
        correct += (logits.argmax(1) == data.y[start : start + rt.eval_batch]).sum()
    model.train()
    return correct.item() / max(len(data), 1)


def train(
    model: nn.Module,
    data: ImageSet,
    recipe: Recipe,
    rt: Runtime,
    *,
    seed: int,
    eval_data: ImageSet | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; evaluate on ``eval_data`` at ``recipe.eval_epochs()``.

    ``should_stop`` is polled after every epoch (the wall-clock budget); the result then says how many
    epochs were done instead of raising. ``on_epoch(epoch, mean_train_loss)`` reports progress.
    """
    gen = torch.Generator().manual_seed(seed)  # data order + augmentation, device-independent
    torch.manual_seed(seed)  # dropout / drop-path
    model.to(rt.device).train()
    if rt.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        _param_groups(model, recipe.weight_decay),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )
    steps_per_epoch = len(_batches(len(data), recipe.batch_size, torch.Generator().manual_seed(0)))
    total = steps_per_epoch * recipe.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, _cosine(total, round(recipe.warmup_epochs * steps_per_epoch))
    )
    eval_at = recipe.eval_epochs() if eval_data is not None else set()
    curve: list[tuple[int, float]] = []
    train_s = eval_s = 0.0
    loss_value = float("nan")
    epoch = 0
    for epoch in range(1, recipe.epochs + 1):
        t0 = time.perf_counter()
        running = torch.zeros((), device=rt.device)
        for idx in _batches(len(data), recipe.batch_size, gen):
            idx_dev = idx.to(rt.device)
            x = normalize(augment(data.x[idx_dev], gen, recipe.crop_pad, recipe.flip), rt.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=rt.amp):
                loss = F.cross_entropy(model(x), data.y[idx_dev], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach().float()
        loss_value = running.item() / steps_per_epoch  # one sync per epoch, not per step
        _sync(rt.device)
        train_s += time.perf_counter() - t0
        if on_epoch is not None:
            on_epoch(epoch, loss_value)
        if epoch in eval_at:
            t0 = time.perf_counter()
            curve.append((epoch, accuracy(model, eval_data, rt)))  # type: ignore[arg-type]
            eval_s += time.perf_counter() - t0
        if not math.isfinite(loss_value) or (epoch < recipe.epochs and should_stop()):
            break
    return TrainResult(curve, epoch, round(train_s, 3), round(eval_s, 3), loss_value)

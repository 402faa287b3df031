"""Ad-hoc (not part of hmt): how far each lift moves the target's function away from ``block``'s.

    python benchmarks/results/quality-full-cpu/more-seeds-2026-11-28/fnchange.py \\
        <arm-1 cache>/pretrain-resnet18-<key>.safetensors efficientnet_b0 regnety_016 ...

Each strategy's transfer (arm 1's trained resnet18, 5 classes) is loaded into the target built at seed 0;
its pre-logit features of one fixed 16-image noise batch at 64 px, in training mode (BatchNorms on the
batch's statistics, as fine-tuning starts), are compared with ``block``'s: relative L2 change and cosine.
"""

import sys
import tempfile
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file

import benchmarks.variants.rows  # noqa: F401  (registers block-initscale-rows)
from hmt_cli.options import TransferOptions
from hmt_cli.pipeline import transfer

STRATEGIES = ("block", "block-initscale", "block-initscale-written", "block-initscale-rows")


def features(weights: Path, tgt: str, strategy: str, tmp: Path) -> torch.Tensor:
    out = tmp / f"{tgt}-{strategy}.safetensors"
    transfer(TransferOptions(src="resnet18", tgt=tgt, out=out, src_weights=weights, num_classes=5,
                             src_kwargs={"num_classes": 5}, strategy=strategy, force=True, device="cpu"))
    torch.manual_seed(0)
    model = timm.create_model(tgt, num_classes=5)
    model.load_state_dict(load_file(out))
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():
        return model.forward_head(model.forward_features(torch.randn(16, 3, 64, 64)), pre_logits=True)


def main() -> None:
    torch.set_num_threads(1)
    weights = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        for tgt in sys.argv[2:]:
            feats = {s: features(weights, tgt, s, Path(tmp)) for s in STRATEGIES}
            base = feats["block"]
            for s in STRATEGIES[1:]:
                rel = float((feats[s] - base).norm() / base.norm())
                cos = float(torch.nn.functional.cosine_similarity(feats[s].flatten(), base.flatten(), dim=0))
                print(f"{tgt:24s} {s:26s} rel change {rel:.3f} cos {cos:.3f}")


if __name__ == "__main__":
    main()

"""Zoo sweep on the meta device: ~20 timm families, each with a topology the chain rules must handle.

The full sweep (one model per timm module, ~100) is ``python benchmarks/zoo.py``; this fixed subset
runs in CI. Each model: extraction succeeds (recording which extractor did it), the chain is not
empty, every parameter is accounted for, and a dry-run plan ``resnet18 -> model`` transfers layers.
"""

from __future__ import annotations

import pytest

# family -> (model, what it exercises)
ZOO = {
    "resnet": ("resnet18", "projection shortcuts"),
    "mobilenetv3": ("mobilenetv3_small_050", "depthwise + squeeze-excite gates"),
    "efficientnet": ("efficientnet_b0", "MBConv + SE"),
    "regnet": ("regnety_002", "grouped convs + SE"),
    "convnext": ("convnext_atto", "depthwise 7x7 + linear MLP on NHWC"),
    "vision_transformer": ("vit_tiny_patch16_224", "fused qkv, cls token, pos embed"),
    "swin_transformer": ("swin_tiny_patch4_window7_224", "windows, relative position bias table"),
    "swin_transformer_v2": ("swinv2_tiny_window8_256", "qkv weight used through F.linear, cpb MLP"),
    "densenet": ("densenet121", "dense concatenation"),
    "inception_v3": ("inception_v3", "parallel branches, 299px input"),
    "maxxvit": ("coatnet_nano_rw_224", "MBConv + relative-position attention"),
    "eva": ("eva02_tiny_patch14_224", "rope, SwiGLU"),
    "levit": ("levit_128s", "conv-as-linear, distillation head"),
    "hiera": ("hiera_tiny_224", "optional mask argument, unrolled tokens"),
    "xcit": ("xcit_nano_12_p8_224", "cross-covariance attention, Fourier position conv"),
    "ghostnet": ("ghostnet_050", "ghost modules (concatenated cheap ops)"),
    "hrnet": ("hrnet_w18_small", "parallel multi-resolution streams"),
    "sequencer": ("sequencer2d_s", "LSTM token mixing"),
    "crossvit": ("crossvit_tiny_240", "two token streams, cross attention"),
    "nfnet": ("nf_regnet_b0", "normalizer-free, scaled weight standardization"),
    "gemma4_vit": ("gemma4_vit_167m", "Python control flow on a tensor (x.ndim): the exec extractor"),
}


@pytest.mark.zoo
@pytest.mark.parametrize("family", sorted(ZOO))
def test_zoo_family(family: str) -> None:
    from hmt_cli.inspect import chain_report
    from hmt_cli.options import TransferOptions
    from hmt_cli.pipeline import transfer

    name, _ = ZOO[family]
    data = chain_report(name, {})
    assert data["extractor"] in ("fx", "exec")
    assert len(data["chain"]) > 0
    assert data["params"]["accounted"] == 1.0, data["params"]
    assert "unaccounted" not in data["params"]["by_owner"]
    assert data["seconds"] < 5
    report = transfer(TransferOptions(src="resnet18", tgt=name, dry_run=True, device="cpu"))
    assert report.layers_transferred > 0
    assert report.tgt_chain_len == len(data["chain"])


@pytest.mark.zoo
def test_zoo_extractors_recorded() -> None:
    """fx where it traces; the exec fallback for data-dependent control flow, with its guesses counted."""
    from hmt_cli.inspect import chain_report

    assert chain_report("resnet18", {})["extractor"] == "fx"
    gemma = chain_report("gemma4_vit_167m", {})
    assert gemma["extractor"] == "exec"


@pytest.mark.zoo
def test_zoo_resnet50_semantics() -> None:
    """The issue's reference case: 49 chain convs, 4 downsample projections off as shortcuts, fc the head."""
    from hmt_cli.inspect import chain_report

    data = chain_report("resnet50", {})
    assert len(data["chain"]) == 49
    assert data["off_chain_counts"] == {"head": 1, "shortcut": 4}
    assert {row["path"] for row in data["off_chain"] if row["reason"] == "shortcut"} == {
        f"layer{i}.0.downsample.0" for i in range(1, 5)}

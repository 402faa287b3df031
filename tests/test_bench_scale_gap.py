"""benchmarks/scale_gap.py: the factors it reports are the ones block-initscale applies over block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import invoke_cli, save_state, timm_state

from benchmarks import scale_gap


def _small_kernels(name: str) -> dict[str, torch.Tensor]:
    state = timm_state(name, seed=5)
    return {k: v * 0.1 if k.endswith(".weight") and v.dim() == 4 else v for k, v in state.items()}


def _block(weights: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = tmp_path / "block-check.safetensors"
    run = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", weights, "--tgt", "test_efficientnet",
                     "--num-classes", 10, "--out", out, "--strategy", "block", "--seed", 0, "--quiet")
    assert run.code == 0, run
    return load_file(str(out))


def test_scale_gap_reports_the_initscale_factors_behind_batchnorms_and_none_elsewhere(tmp_path: Path) -> None:
    weights = save_state(_small_kernels("test_resnet"), tmp_path / "src.safetensors")
    rows = scale_gap.factors("test_resnet", weights, "test_efficientnet", 10, tmp_path)
    init = timm_state("test_efficientnet", seed=0, num_classes=10)  # the init the transfer starts from
    assert rows and all(f >= 1.0 - 1e-6 for _, f, _ in rows)  # up only
    scaled = [(k, f) for k, f, _ in rows if f > scale_gap.CHANGED]
    assert len(scaled) >= 5
    # Each factor is what brings block's written tensor up to the target init's std, and never below 1.
    block = _block(weights, tmp_path)
    for key, factor, _ in rows:
        want = max(1.0, torch.std(init[key]).item() / torch.std(block[key]).item())
        assert factor == pytest.approx(want, rel=1e-4), key
    s = scale_gap.summary("test_efficientnet", rows)
    assert (s["weights"], s["changed"]) == (len(rows), len(scaled))
    assert s["max"] == pytest.approx(max(f for _, f in scaled)) and 0.0 < s["changed_params"] <= 1.0
    # A pre-norm ViT: nothing behind a BatchNorm, so every factor is 1.
    vit = scale_gap.factors("test_resnet", weights, "test_vit", 10, tmp_path)
    assert vit and all(f == pytest.approx(1.0) for _, f, _ in vit)
    assert scale_gap.summary("test_vit", vit)["changed"] == 0


def test_written_gaps_measure_the_source_slice_which_the_whole_tensor_factor_understates(tmp_path: Path) -> None:
    weights = save_state(_small_kernels("test_resnet"), tmp_path / "src.safetensors")
    rows = scale_gap.written_gaps("test_resnet", weights, "test_efficientnet", 10, tmp_path)
    whole = {k: f for k, f, _ in scale_gap.factors("test_resnet", weights, "test_efficientnet", 10, tmp_path)}
    # main() hands over the block transfer factors() just wrote instead of running it again: same rows
    assert scale_gap.written_gaps("test_resnet", weights, "test_efficientnet", 10, tmp_path,
                                  tmp_path / "block.safetensors") == rows
    init = timm_state("test_efficientnet", seed=0, num_classes=10)
    block = _block(weights, tmp_path)
    assert rows and {k for k, *_ in rows} <= set(whole)
    for key, frac, gap, numel in rows:
        mask = block[key] != init[key]
        assert frac == pytest.approx(mask.float().mean().item()) and numel == init[key].numel()
        assert gap == pytest.approx(torch.std(init[key]).item() / torch.std(block[key][mask]).item(), rel=1e-4)
        assert gap >= whole[key] * (1 - 1e-4), key  # below the init, the init part pulls the std up
    # The narrow test_resnet fills only part of these layers, and there its 0.1x kernels sit far further below
    # the init than the whole-tensor factor says.
    partial = [(key, gap) for key, frac, gap, _ in rows if frac < 0.99]
    assert partial and all(gap > 2 * whole[key] for key, gap in partial)
    s = scale_gap.written_summary("test_efficientnet", rows)
    assert s["partial"] == len(partial) and s["weights"] == len(rows)
    assert scale_gap.written_summary("test_vit", scale_gap.written_gaps(
        "test_resnet", weights, "test_vit", 10, tmp_path))["weights"] == 0  # nothing behind a BatchNorm

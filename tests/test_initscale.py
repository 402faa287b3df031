"""``block-initscale``: block's tensors, with weights behind a BatchNorm at the target init's scale and the
tensors that must move with them (bias, running statistics) moved by the same factor; and
``block-initscale-written``, which measures and lifts only the elements the source wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import invoke_cli, plan_for, save_state, timm_state

from hmt_cli.health import rescale
from hmt_cli.match import TensorOp
from hmt_cli.match.base import SCALES
from hmt_cli.match.initscale import behind_batchnorm
from hmt_cli.pipeline import analyze
from hmt_cli.plan import TransferPlan


def _trained_like(name: str) -> dict[str, torch.Tensor]:
    """A random source with a trained network's traits: small kernels (what makes the scales differ) and
    non-trivial BatchNorm statistics (what the eval-mode function depends on)."""
    state = timm_state(name, seed=5)
    g = torch.Generator().manual_seed(5)
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 4:
            state[key] = value * 0.1
        elif key.endswith(".running_mean"):
            state[key] = 0.05 * torch.randn(value.shape, generator=g)
        elif key.endswith(".running_var"):
            state[key] = 0.01 + 0.02 * torch.rand(value.shape, generator=g)
    return state


def _transfer(tmp_path: Path, weights: Path, strategy: str, tgt: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = tmp_path / f"{strategy}-{tgt}.safetensors"
    run = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", weights, "--tgt", tgt, "--out", out,
                     "--strategy", strategy, "--signal-check", "off", "--seed", 0, "--quiet")
    assert run.code == 0, run
    return load_file(str(out))


def test_initscale_computes_blocks_function_at_the_inits_scale(tmp_path: Path) -> None:
    import timm

    weights = save_state(_trained_like("test_resnet"), tmp_path / "src.safetensors")
    block = _transfer(tmp_path, weights, "block", "test_efficientnet")
    scaled = _transfer(tmp_path, weights, "block-initscale", "test_efficientnet")
    init = timm_state("test_efficientnet", seed=0)
    plan = plan_for("block-initscale", "test_resnet", "test_efficientnet")
    rescaled = [op.tgt_key for op in plan.ops if op.scale == "init_std_up"]
    assert len(rescaled) >= 5
    for key in rescaled:  # up to the init's scale (this source is smaller everywhere); block keeps the source's
        assert torch.std(scaled[key]).item() == pytest.approx(torch.std(init[key]).item(), rel=1e-4), key
        assert torch.std(block[key]).item() < 0.9 * torch.std(init[key]).item(), key  # part of it kept init
    # Running statistics stay the source's, unscaled: the same tensors as block's.
    stats = [op.tgt_key for op in plan.ops if op.tgt_key.endswith((".running_mean", ".running_var"))]
    assert stats and all(torch.equal(scaled[k], block[k]) for k in stats)
    # The same function in training mode (batch statistics, as fine-tuning runs), up to the norms' eps: with
    # a negligible eps the two must agree to rounding.
    models = []
    for state in (block, scaled):
        model = timm.create_model("test_efficientnet")
        model.load_state_dict(state, strict=True)
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eps = 1e-12
        models.append(model)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = (m.train()(x) for m in models)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5 * a.abs().max().item())


def test_initscale_changes_nothing_without_a_batchnorm_after_the_layer(tmp_path: Path) -> None:
    """A ViT's layers are pre-norm (LayerNorm before qkv / fc1): scaling them would change the function."""
    weights = save_state(_trained_like("test_resnet"), tmp_path / "src.safetensors")
    block = _transfer(tmp_path, weights, "block", "test_vit")
    scaled = _transfer(tmp_path, weights, "block-initscale", "test_vit")
    assert block.keys() == scaled.keys()
    assert all(torch.equal(block[k], scaled[k]) for k in block)


def test_initscale_plan_scales_exactly_the_layers_behind_a_batchnorm() -> None:
    plan = plan_for("block-initscale", "resnet18", "mobilenetv3_large_100")
    layers = {n.path: n for n in analyze("mobilenetv3_large_100").graph.layers}
    scaled = {op.tgt_layer for op in plan.ops if op.scale == "init_std_up"}
    written = {op.tgt_layer for op in plan.ops if op.tgt_key == layers[op.tgt_layer].weight}
    assert scaled == {p for p in written if behind_batchnorm(layers[p])}
    assert "conv_head" in written and "conv_head" not in scaled  # no norm after the head conv
    assert "blocks.0.0.conv_dw" in scaled
    # Everything but the scale is block's plan.
    block = plan_for("block", "resnet18", "mobilenetv3_large_100")
    assert [(o.tgt_key, o.src_key, o.rule, o.params) for o in plan.ops] == \
        [(o.tgt_key, o.src_key, o.rule, o.params) for o in block.ops]


def _op(key: str, layer: str, scale: str) -> TensorOp:
    return TensorOp(key, key, "copy", (4,), (4,), layer, layer, scale=scale)


def test_rescale_moves_a_bias_with_its_weights_factor_and_reverts_both_together() -> None:
    ops = (_op("a.weight", "a", "init_std"), _op("a.bias", "a", "layer"),
           _op("b.weight", "b", "init_std"), _op("b.bias", "b", "layer"),
           _op("c.weight", "c", "init_std_up"), _op("c.bias", "c", "layer"),
           _op("d.weight", "d", "init_std_up"), _op("d.bias", "d", "layer"))
    plan = TransferPlan("t", "s", "t", 1, 1, (), ops, ())
    state = {"a.weight": torch.tensor([1.0, -1.0, 1.0, -1.0]), "a.bias": torch.tensor([0.5, 0.0, 0.0, 1.0]),
             "b.weight": torch.zeros(4), "b.bias": torch.ones(4),
             "c.weight": torch.tensor([1.0, -1.0, 1.0, -1.0]), "c.bias": torch.ones(4),
             "d.weight": torch.tensor([1.0, -1.0, 1.0, -1.0]), "d.bias": torch.ones(4)}
    sd = float(torch.std(state["a.weight"]))
    sizes = {"a.weight": 4.0 * sd, "b.weight": 1.0, "c.weight": 2.0 * sd, "d.weight": 0.5 * sd}
    revert = rescale(plan, sizes, state)
    assert torch.equal(state["a.weight"], torch.tensor([4.0, -4.0, 4.0, -4.0]))
    assert torch.equal(state["a.bias"], torch.tensor([2.0, 0.0, 0.0, 4.0]))
    assert sorted(revert) == ["b.bias", "b.weight"]  # an all-zero weight has no factor: its bias follows it
    # init_std_up: up to the init's std (x2, bias too), never down (d keeps its values).
    assert torch.equal(state["c.weight"], torch.tensor([2.0, -2.0, 2.0, -2.0])) and torch.equal(state["c.bias"],
                                                                                             torch.full((4,), 2.0))
    assert torch.equal(state["d.weight"], torch.tensor([1.0, -1.0, 1.0, -1.0])) and torch.equal(state["d.bias"],
                                                                                             torch.ones(4))


def test_a_tensor_op_with_an_unknown_scale_fails_when_made() -> None:
    """A plug-in strategy's misspelt scale must not silently write the source's magnitude."""
    with pytest.raises(ValueError, match=r"a\.weight: unknown scale 'init_sdt'.*init_std_up"):
        _op("a.weight", "a", "init_sdt")


def test_rescale_implements_every_scale_a_tensor_op_accepts() -> None:
    """Each accepted scale other than ``none`` changes the tensor: none is accepted and then ignored."""
    want = {"init_std": 24.0, "init_std_up": 24.0, "init_std_up_written": 24.0, "layer": 24.0}  # an init 24x larger
    assert set(want) == set(SCALES) - {"none"}
    for scale, factor in want.items():
        ops = (_op("a.weight", "a", "init_std"), _op("b.weight", "a", scale))
        state = {"a.weight": torch.tensor([1.0, -1.0, 1.0, -1.0]), "b.weight": torch.tensor([1.0, -1.0, 1.0, -1.0])}
        sizes = {k: 24.0 * float(torch.std(v)) for k, v in state.items()}
        assert rescale(TransferPlan("t", "s", "t", 1, 1, (), ops, ()), sizes, state) == []
        assert torch.allclose(state["b.weight"], factor * torch.tensor([1.0, -1.0, 1.0, -1.0])), scale


def test_rescale_written_measures_and_lifts_only_the_source_elements_and_its_bias_follows() -> None:
    ops = (_op("a.weight", "a", "init_std_up_written"), _op("a.bias", "a", "layer"))
    plan = TransferPlan("t", "s", "t", 1, 1, (), ops, ())
    # Half the weight holds source values (+-1), the other half the init (+-8); the bias likewise.
    state = {"a.weight": torch.tensor([1.0, -1.0, 8.0, -8.0]), "a.bias": torch.tensor([0.5, 3.0, 3.0, 3.0])}
    regions = {"a.weight": (slice(0, 2),), "a.bias": (slice(0, 1),)}
    sizes = {"a.weight": 4.0 * float(torch.std(torch.tensor([1.0, -1.0])))}  # the init's std: 4x the source's
    assert rescale(plan, sizes, state, regions) == []
    assert torch.equal(state["a.weight"], torch.tensor([4.0, -4.0, 8.0, -8.0]))  # the init part is untouched
    assert torch.equal(state["a.bias"], torch.tensor([2.0, 3.0, 3.0, 3.0]))
    # Without regions it is init_std_up: measured on the whole tensor, whose init part is already larger.
    state = {"a.weight": torch.tensor([1.0, -1.0, 8.0, -8.0]), "a.bias": torch.tensor([0.5, 3.0, 3.0, 3.0])}
    assert rescale(plan, sizes, state) == []
    assert torch.equal(state["a.weight"], torch.tensor([1.0, -1.0, 8.0, -8.0]))


def test_initscale_written_lifts_the_source_slice_to_the_inits_scale_and_keeps_the_init_around_it(
        tmp_path: Path) -> None:
    weights = save_state(_trained_like("test_resnet"), tmp_path / "src.safetensors")
    block = _transfer(tmp_path, weights, "block", "test_efficientnet")
    whole = _transfer(tmp_path, weights, "block-initscale", "test_efficientnet")
    written = _transfer(tmp_path, weights, "block-initscale-written", "test_efficientnet")
    init = timm_state("test_efficientnet", seed=0)
    plan = plan_for("block-initscale-written", "test_resnet", "test_efficientnet")
    lifted = [op.tgt_key for op in plan.ops if op.scale == "init_std_up_written"]
    partial = 0
    for key in lifted:
        mask = block[key] != init[key]  # the source's elements
        partial += bool((~mask).any())
        assert torch.equal(written[key][~mask], init[key][~mask]), key  # the init around the slice: as it was
        init_std, slice_std = torch.std(init[key]).item(), torch.std(block[key][mask]).item()
        factor = max(1.0, init_std / slice_std)
        torch.testing.assert_close(written[key][mask], block[key][mask] * factor, rtol=1e-5, atol=0.0)
        # The whole-tensor lift leaves this small source's slice well below the init's scale.
        assert torch.std(written[key][mask]).item() == pytest.approx(init_std, rel=1e-4), key
        assert torch.std(whole[key][mask]).item() < 0.9 * init_std, key
    assert len(lifted) >= 5 and partial >= 5
    # Everything but the scale kind is block-initscale's plan.
    ref = plan_for("block-initscale", "test_resnet", "test_efficientnet")
    kinds = {"init_std_up": "init_std_up_written"}
    assert [(o.tgt_key, o.src_key, o.rule, kinds.get(o.scale, o.scale)) for o in ref.ops] == \
        [(o.tgt_key, o.src_key, o.rule, o.scale) for o in plan.ops]

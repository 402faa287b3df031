"""Strategies on real timm models: what each pairs and writes, and that every one gives a loadable init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import invoke_cli, plan_for, save_state, timm_state

from hmt_cli.match import get_strategy, names
from hmt_cli.pipeline import analyze
from hmt_cli.plan import make_plan
from hmt_cli.reshape.centre import centre_into


def test_centre_maps_batchnorm_with_its_layer() -> None:
    plan = plan_for("centre", "test_resnet", "test_efficientnet")
    ops = {op.tgt_key: op for op in plan.ops}
    tgt = analyze("test_efficientnet")
    src = analyze("test_resnet")
    checked = 0
    for pair in plan.pairs:
        if pair.src is None or pair.role != "chain" or not pair.tgt.norm_keys or not pair.src.norm_keys:
            continue
        damped = pair.src.index in src.graph.closes_residual and pair.tgt.index not in tgt.graph.bypassed
        # Every BN tensor of the target layer comes from the BN of *its* source layer, by name.
        for key in pair.tgt.norm_keys:
            if key.endswith("num_batches_tracked") or (damped and key.endswith(".weight")):
                continue
            leaf = key.rsplit(".", 1)[1]
            assert ops[key].src_key == f"{src.graph.layer(pair.src.path).norm}.{leaf}"
            assert ops[key].rule == "centre"
            checked += 1
    assert checked >= 4 * 5  # several layers, four tensors each
    assert all(op.tgt_key in tgt.graph.param_shapes for op in plan.ops)


def test_centre_keeps_damping_gains_off_the_main_path() -> None:
    """A residual-closing source norm's gain (small: it damps a branch) never lands on a target cut."""
    src, tgt = analyze("test_resnet"), analyze("test_efficientnet")
    plan = plan_for("centre", "test_resnet", "test_efficientnet")
    written = {op.tgt_key for op in plan.ops}
    damped = [p for p in plan.pairs if p.src is not None and p.role == "chain" and p.tgt.norm_keys
              and p.src.index in src.graph.closes_residual and p.tgt.index not in tgt.graph.bypassed]
    # test_efficientnet's blocks without skip, e.g. blocks.1.0 (16 -> 24 channels, stride 2).
    assert "blocks.1.0.conv_pwl" in {p.tgt.path for p in damped}
    for pair in damped:
        norm = tgt.graph.layer(pair.tgt.path).norm
        assert f"{norm}.weight" not in written  # the gain keeps the target's init
        assert {f"{norm}.bias", f"{norm}.running_mean", f"{norm}.running_var"} <= written
    # Inside residual branches a small gain only damps the branch: ResNet -> ResNet keeps every gain.
    r50 = plan_for("centre", "resnet18", "resnet50")
    bn_gains = {f"{n.norm}.weight" for n in analyze("resnet50").chain.layers if n.norm}
    assert len(bn_gains) == 49 and bn_gains <= {op.tgt_key for op in r50.ops}


@pytest.mark.parametrize("strategy", ["stage", "centre"])
def test_input_layer_takes_the_input_layer(strategy: str) -> None:
    """A CIFAR ResNet runs its first stage at full resolution, a timm target at 1/2: by relative depth
    alone the target's stem took layer1.0.conv1 and read three of its 16 input channels as RGB."""
    plan = plan_for(strategy, "benchmarks.cifar_resnet:resnet20", "test_efficientnet")
    chain = [p for p in plan.pairs if p.role == "chain"]
    assert (chain[0].tgt.path, chain[0].src.path, chain[0].note) == ("conv_stem", "conv1", "input layer")
    assert all(p.src is not None and p.src.path != "conv1" for p in chain[1:])
    # Stems that read different inputs (1 channel vs RGB) are not anchored: relative depth decides.
    s, t = analyze("benchmarks.cifar_resnet:resnet20"), analyze("test_efficientnet", {"in_chans": 1})
    gray = make_plan(get_strategy(strategy), s.graph, s.chain, t.graph, t.chain)
    assert gray.pairs[0].note != "input layer" and gray.pairs[0].src.path == "layer1.0.conv1"


def test_centre_leaves_layernorm_at_init() -> None:
    """A BatchNorm's trained affine is no LayerNorm's: measured to cost convnext_atto 11 points."""
    plan = plan_for("centre", "resnet18", "convnext_atto")
    tgt = analyze("convnext_atto")
    norm_keys = {k for n in tgt.chain.layers for k in n.norm_keys}
    assert norm_keys and not norm_keys & {op.tgt_key for op in plan.ops}
    assert {op.tgt_key for op in plan.ops} >= {n.weight for n in tgt.chain.layers}  # every chain weight written


def test_centre_output_values(tmp_path: Path) -> None:
    """The written stem is the target's own seeded init with the source's centred overlap in the middle."""
    src_state = timm_state("test_resnet", seed=3)
    weights = save_state(src_state, tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    run = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", weights, "--tgt", "test_efficientnet",
                     "--out", out, "--strategy", "centre", "--signal-check", "off", "--seed", 0, "--quiet")
    assert run.code == 0, run
    from safetensors.torch import load_file

    written = load_file(str(out))
    init = timm_state("test_efficientnet", seed=0)
    plan = plan_for("centre", "test_resnet", "test_efficientnet")
    stem = next(op for op in plan.ops if op.tgt_key == "conv_stem.weight")
    expected = centre_into(src_state[stem.src_key], init["conv_stem.weight"])
    assert torch.equal(written["conv_stem.weight"], expected)
    assert not torch.equal(written["conv_stem.weight"], init["conv_stem.weight"])
    bn = next(op for op in plan.ops if op.tgt_key.endswith("running_var"))
    assert torch.equal(written[bn.tgt_key], centre_into(src_state[bn.src_key], init[bn.tgt_key]))


@pytest.mark.parametrize("strategy", names())
@pytest.mark.parametrize("tgt", ["test_efficientnet", "test_vit"])
def test_every_strategy_gives_a_loadable_finite_init(tmp_path: Path, strategy: str, tgt: str) -> None:
    import timm

    weights = save_state(timm_state("test_resnet"), tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    run = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", weights, "--tgt", tgt, "--out", out,
                     "--strategy", strategy, "--json")
    assert run.code == 0, run
    model = timm.create_model(tgt, pretrained=True, pretrained_cfg_overlay={"file": str(out)})  # strict load
    with torch.no_grad():
        assert bool(torch.isfinite(model.eval()(torch.randn(2, 3, *model.pretrained_cfg["input_size"][1:]))).all())


def test_centre_depthwise_targets_take_diagonal_kernels() -> None:
    plan = plan_for("centre", "resnet18", "mobilenetv3_large_100")
    depthwise = {n.weight for n in analyze("mobilenetv3_large_100").chain.layers if n.kind == "depthwise"}
    ops = [op for op in plan.ops if op.tgt_key in depthwise]
    assert len(ops) == len(depthwise) > 10
    assert all(dict(op.params) == {"diagonal": 1} for op in ops)
    # Norm gains skip an untrained (all-zero) source gain; every other tensor takes the plain rule.
    for op in plan.ops:
        if op.tgt_key in depthwise:
            continue
        gain = len(op.tgt_shape) == 1 and op.tgt_key.endswith(".weight")
        assert dict(op.params) == ({"keep_zero": 1} if gain else {}), op


def _transfer_json(tmp_path: Path, src_state: dict, *extra: object) -> tuple[dict, dict]:
    """test_resnet -> test_efficientnet with ``src_state`` as the source; (JSON report, written tensors)."""
    import json

    from safetensors.torch import load_file

    weights = save_state(src_state, tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    run = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", weights, "--tgt", "test_efficientnet",
                     "--out", out, "--seed", 0, "--json", *extra)
    assert run.code == 0, run
    return json.loads(run.stdout), load_file(str(out))


def test_signal_fallback_restores_the_exact_seeded_init(tmp_path: Path) -> None:
    """A source layer 10^4 too strong explodes its target layer; fallback puts the target's own init back.

    The init is no longer kept beside the result (apply writes in place): the revert rebuilds it, and
    must give the very values the seeded build gave.
    """
    plan = plan_for("centre", "test_resnet", "test_efficientnet")
    stem = next(op for op in plan.ops if op.tgt_key == "conv_stem.weight")
    src_state = timm_state("test_resnet", seed=3)
    src_state[stem.src_key] = src_state[stem.src_key] * 1e4
    report, written = _transfer_json(tmp_path, src_state)
    assert "conv_stem" in report["fallback"], report["fallback"]
    init = timm_state("test_efficientnet", seed=0)
    for op in plan.ops:
        if op.tgt_layer in report["fallback"]:
            assert torch.equal(written[op.tgt_key], init[op.tgt_key]), op.tgt_key
    others = [op for op in plan.ops if op.tgt_layer not in report["fallback"] and op.tgt_key.endswith(".weight")]
    assert any(not torch.equal(written[op.tgt_key], init[op.tgt_key]) for op in others)  # the rest transferred


def test_rescale_keeps_the_init_where_the_result_has_no_spread(tmp_path: Path) -> None:
    """`stage` rescales each weight to its init's std; an all-zero source weight cannot be, and stays at init."""
    plan = plan_for("stage", "test_resnet", "test_efficientnet")
    stem = next(op for op in plan.ops if op.tgt_key == "conv_stem.weight")
    src_state = timm_state("test_resnet", seed=3)
    src_state[stem.src_key] = torch.zeros_like(src_state[stem.src_key])
    report, written = _transfer_json(tmp_path, src_state, "--strategy", "stage", "--signal-check", "off")
    init = timm_state("test_efficientnet", seed=0)
    assert torch.equal(written["conv_stem.weight"], init["conv_stem.weight"])
    assert any("kept their init" in w for w in report["warnings"]), report["warnings"]
    row = next(t for t in report["tensors"] if t["key"] == "conv_stem.weight")
    assert row["status"] == "init"
    rescaled = next(op for op in plan.ops if op.tgt_key != "conv_stem.weight")
    assert torch.std(written[rescaled.tgt_key]).item() == pytest.approx(torch.std(init[rescaled.tgt_key]).item(),
                                                                         rel=1e-4)


def test_head_transfer_into_the_same_architecture_reproduces_the_source(tmp_path: Path) -> None:
    """``--head transfer`` with one label space: same architecture, so the output is the source model itself."""
    import timm
    from safetensors.torch import load_file

    src = save_state(timm_state("test_resnet", seed=3, num_classes=10), tmp_path / "src.safetensors")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    source = timm.create_model("test_resnet", num_classes=10)
    source.load_state_dict(load_file(str(src)))
    want = source.eval()(x)
    outputs = {}
    for head in ("transfer", "init"):
        out = tmp_path / f"{head}.safetensors"
        run = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", src, "--src-arg", "num_classes=10",
                         "--tgt", "test_resnet", "--num-classes", 10, "--head", head, "--out", out, "-q",
                         # `block`: the default's weight-scale lift keeps only the train-mode function
                         "--strategy", "block")
        assert run.code == 0, run.stderr
        model = timm.create_model("test_resnet", num_classes=10)
        model.load_state_dict(load_file(str(out)), strict=True)
        outputs[head] = model.eval()(x)
    torch.testing.assert_close(outputs["transfer"], want)
    assert not torch.allclose(outputs["init"], want, atol=1e-3)  # the head kept its init: other logits


def test_head_transfer_refuses_other_label_spaces(tmp_path: Path) -> None:
    src = save_state(timm_state("test_resnet", num_classes=10), tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    base = ("transfer", "--src", "test_resnet", "--src-weights", src, "--tgt", "test_efficientnet", "--out", out,
            "--head", "transfer")
    run = invoke_cli(*base, "--src-arg", "num_classes=10", "--num-classes", 7)
    assert run.code == 2 and not out.exists()
    assert run.stderr.strip().splitlines() == [
        "hmt: usage error: --head transfer needs one label space: the source classifier has 10 outputs, the "
        "target's 7 (make them match with --num-classes or --src-arg num_classes=N, or use --head init)"]
    # The source model built with timm's 1000 classes, the file holding a 10-class head: a weights error.
    run = invoke_cli(*base, "--num-classes", 1000)
    assert run.code == 5 and not out.exists()
    assert "the weights file's fc.weight is (10, " in run.stderr and "Traceback" not in run.stderr


def _chain_pairs(strategy: str, src: str, tgt: str) -> dict[str, str]:
    return {p.tgt.path: p.src.path for p in plan_for(strategy, src, tgt).pairs if p.role == "chain" and p.src}


def test_block_units_follow_residual_blocks_and_timm_block_names() -> None:
    from hmt_cli.match.block import block_prefix, residual_blocks, units

    assert block_prefix("blocks.1.0.conv_pw") == "blocks.1.0" and block_prefix("conv_head") == ""
    assert block_prefix("stages.2.blocks.11.mlp.fc1") == "stages.2.blocks.11"
    r50 = analyze("resnet50")
    assert len(set(residual_blocks(r50.chain, r50.graph).values())) == 16
    eff = analyze("efficientnet_b0")
    layers = list(eff.chain.layers)
    grouped = [[layers[i].path for i in u] for u in units(layers, eff.chain, eff.graph)]
    # blocks.1.0 has no skip (a cut run of three layers, one unit); blocks.1.1 is a residual block.
    assert ["blocks.1.0.conv_pw", "blocks.1.0.conv_dw", "blocks.1.0.conv_pwl"] in grouped
    assert ["blocks.1.1.conv_pw", "blocks.1.1.conv_dw", "blocks.1.1.conv_pwl"] in grouped
    assert grouped[0] == ["conv_stem"] and grouped[-1] == ["conv_head"]
    assert sum(map(len, grouped)) == len(layers)


def test_block_pairs_whole_blocks_closing_layer_from_closing_layer() -> None:
    """What DPIAT does on resnet18 -> resnet50 (benchmarks/peers/dpiat_map.py), with every block written."""
    pairs = _chain_pairs("block", "resnet18", "resnet50")
    assert pairs["conv1"] == "conv1"  # the input-layer anchor
    targets = [n.path for n in analyze("resnet50").chain.layers[1:]]
    assert len(targets) == 48 and len(pairs) == 49  # every target chain layer takes a source layer
    sources = []
    for i in range(0, 48, 3):  # each bottleneck (conv1, conv2, conv3) takes one basic block (conv1, conv2)
        c1, c2, c3 = (pairs[t] for t in targets[i:i + 3])
        assert c1 == c2 and c1.endswith("conv1") and c3 == c1.replace("conv1", "conv2")
        assert c1.split(".")[0] == targets[i].split(".")[0]  # layerN from layerN: the stages align
        sources.append(c1)
    assert sources == sorted(sources) and len(set(sources)) == 8  # in order, every source block used

    # An inverted residual without a skip (a cut run) spreads over the whole source block.
    eff = _chain_pairs("block", "resnet18", "efficientnet_b0")
    assert [eff[f"blocks.1.0.{k}"] for k in ("conv_pw", "conv_dw", "conv_pwl")] == [
        "layer1.0.conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert eff["blocks.1.1.conv_pwl"] == "layer1.1.conv2"  # closing from closing


@pytest.mark.parametrize(("src", "tgt"), [("resnet18", "test_vit"),  # CNN -> ViT: attention and MLP blocks
                                          ("benchmarks.cifar_resnet:resnet56", "resnet10t")])  # 27 -> 4 blocks
def test_block_closing_layers_take_closing_layers_in_stage_order(src: str, tgt: str) -> None:
    s, t = analyze(src), analyze(tgt)
    plan = plan_for("block", src, tgt)
    chain = [p for p in plan.pairs if p.role == "chain"]
    assert len(chain) == len(t.chain.layers) and all(p.src is not None for p in chain)
    assert chain[0].note == "input layer" and chain[0].src.path == s.chain.layers[0].path
    order = {n.path: i for i, n in enumerate(s.chain.layers)}
    closing = [p for p in chain if p.tgt.index in t.graph.closes_residual]
    assert closing and all(p.src.index in s.graph.closes_residual and p.note == "closing layer" for p in closing)
    assert all(p.src.index not in s.graph.closes_residual for p in chain if p not in closing)
    taken = [order[p.src.path] for p in closing]
    assert taken == sorted(taken)  # deeper target blocks take deeper source blocks

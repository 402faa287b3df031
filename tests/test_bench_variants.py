"""The quality benchmark's experimental strategies (benchmarks/variants/): what they pair, and that a run
registers them through --strategy-module, shards included."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from conftest import assert_isolates, needs_shared, plan_for

from hmt_cli.match import STRATEGIES, names
from hmt_cli.match.block import residual_blocks
from hmt_cli.pipeline import analyze

ROOT = Path(__file__).resolve().parents[1]


def _registered(module: str) -> Iterator[ModuleType]:
    """A variants module, registered for one test: the registry is restored after it."""
    saved = list(STRATEGIES)
    sys.modules.pop(module, None)
    try:
        yield importlib.import_module(module)
    finally:
        STRATEGIES[:] = saved


@pytest.fixture
def surplus() -> Iterator[ModuleType]:
    yield from _registered("benchmarks.variants.surplus")


@pytest.fixture
def scale() -> Iterator[ModuleType]:
    yield from _registered("benchmarks.variants.scale")


@pytest.fixture
def step() -> Iterator[ModuleType]:
    yield from _registered("benchmarks.variants.step")


@pytest.fixture
def ablate() -> Iterator[ModuleType]:
    import hmt_cli.reshape

    saved = dict(hmt_cli.reshape.RULES), dict(hmt_cli.reshape.CHECKS), hmt_cli.reshape.BASED_RULES
    try:
        yield from _registered("benchmarks.variants.ablate")
    finally:  # the module adds an experimental rule to the registries: take it out again
        for registry, before in zip((hmt_cli.reshape.RULES, hmt_cli.reshape.CHECKS), saved[:2], strict=True):
            registry.clear()
            registry.update(before)
        hmt_cli.reshape.BASED_RULES = saved[2]


@pytest.fixture
def isolate() -> Iterator[ModuleType]:
    yield from _registered("benchmarks.variants.isolate")


def test_surplus_variants_on_resnet18_to_resnet50(surplus: ModuleType) -> None:
    src, tgt = analyze("resnet18"), analyze("resnet50")
    assert len(set(residual_blocks(src.chain, src.graph).values())) == 8
    blocks = residual_blocks(tgt.chain, tgt.graph)
    assert len(set(blocks.values())) == 16 and tgt.chain.layers[0].index not in blocks  # the stem is a cut
    assert {"surplus-identity", "surplus-closing"} <= set(names())

    identity = [p for p in plan_for("surplus-identity", "resnet18", "resnet50").pairs if p.role == "chain"]
    kept = {blocks[p.tgt.index] for p in identity if p.src is not None and p.tgt.index in blocks}
    surplus = {blocks[p.tgt.index] for p in identity if p.src is None}
    assert len(kept) == 8 and len(surplus) == 8 and 0 in kept  # each source block taken once

    # surplus-closing: the same surplus blocks, but only their closing conv3 keeps its init.
    closing = {p.tgt.path: p for p in plan_for("surplus-closing", "resnet18", "resnet50").pairs if p.role == "chain"}
    for p in identity:
        if p.src is None:
            assert (closing[p.tgt.path].src is None) == p.tgt.path.endswith("conv3")
    written = {op.tgt_key for op in plan_for("surplus-closing", "resnet18", "resnet50").ops}
    assert "layer1.2.conv3.weight" not in written and "layer1.2.bn3.weight" not in written
    assert {"layer1.2.conv1.weight", "layer1.2.bn1.weight"} <= written

    # A target with fewer blocks than the source: centre's plan exactly.
    deep = "benchmarks.cifar_resnet:resnet56"
    assert plan_for("surplus-closing", deep, "resnet50").ops == plan_for("centre", deep, "resnet50").ops


def test_initscale_rescales_the_weights_of_norm_followed_layers(scale: ModuleType, tmp_path: Path) -> None:
    from conftest import save_state, timm_state
    from safetensors.torch import load_file

    from hmt_cli.options import TransferOptions
    from hmt_cli.pipeline import transfer

    plan = plan_for("centre-initscale", "test_resnet", "test_efficientnet")
    centre = plan_for("centre", "test_resnet", "test_efficientnet")
    assert [op.tgt_key for op in plan.ops] == [op.tgt_key for op in centre.ops]  # same writes, other scale
    tgt = analyze("test_efficientnet")
    normed = {tgt.graph.layer(p.tgt.path).weight for p in plan.pairs if p.src is not None and p.tgt.norm_keys}
    assert normed and {op.tgt_key for op in plan.ops if op.scale == "init_std"} == normed
    src = save_state(timm_state("test_resnet", seed=2), tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    transfer(TransferOptions("test_resnet", "test_efficientnet", out=out, src_weights=src,
                             strategy="centre-initscale", signal_check="off"))
    written, init = load_file(str(out)), timm_state("test_efficientnet")
    key = "blocks.1.0.conv_pwl.weight"
    assert key in normed
    assert written[key].std().item() == pytest.approx(init[key].std().item(), rel=1e-4)


def test_block_step_scales_a_shallower_targets_closing_gains(step: ModuleType) -> None:
    src = analyze("resnet18")
    assert set(step.blocks_per_stage(src.chain, src.graph).values()) == {2}  # two basic blocks per stage
    linear = {op.tgt_key: dict(op.params) for op in plan_for("block-step", "resnet18", "resnet10t").ops}
    root = {op.tgt_key: dict(op.params) for op in plan_for("block-step-sqrt", "resnet18", "resnet10t").ops}
    block = {op.tgt_key: dict(op.params) for op in plan_for("block", "resnet18", "resnet10t").ops}
    assert linear.keys() == block.keys() == root.keys()
    scaled = {k for k, params in linear.items() if "scale_permille" in params}
    # resnet10t: one block per stage; the closing norm (bn2) of each takes resnet18's, twice as large.
    assert scaled == {f"layer{i}.0.bn2.{leaf}" for i in range(1, 5) for leaf in ("weight", "bias")}
    assert {linear[k]["scale_permille"] for k in scaled} == {2000}
    assert {root[k]["scale_permille"] for k in scaled} == {1414}
    # A deeper target keeps block's plan exactly.
    assert plan_for("block-step", "resnet18", "resnet50").ops == plan_for("block", "resnet18", "resnet50").ops


def test_ablations_change_only_what_they_name(ablate: ModuleType) -> None:
    import torch

    block = {op.tgt_key: op for op in plan_for("block", "resnet18", "mobilenetv3_large_100").ops}
    nostem = {op.tgt_key: op for op in plan_for("block-nostem", "resnet18", "mobilenetv3_large_100").ops}
    nohead = {op.tgt_key: op for op in plan_for("block-nohead", "resnet18", "mobilenetv3_large_100").ops}
    resize = {op.tgt_key: op for op in plan_for("block-stemresize", "resnet18", "mobilenetv3_large_100").ops}
    stem = {k for k in block if k.startswith(("conv_stem.", "bn1."))}
    assert "conv_stem.weight" in stem and set(block) - set(nostem) == stem
    assert set(block) - set(nohead) == {"conv_head.weight"}
    assert {k for k in block if resize[k] != block[k]} == stem
    assert resize["conv_stem.weight"].rule == "paper" and {resize[k].rule for k in stem - {"conv_stem.weight"}} == \
        {"cyclic"}
    balanced = plan_for("block-balanced", "resnet18", "mobilenetv3_large_100").ops
    assert {op.tgt_key for op in balanced if op.rule == "centre_balanced"} == \
        {k for k in block if k.endswith(".weight") and len(block[k].tgt_shape) == 1}  # no shortcut norms here
    # The balancing rule: the kept part of a gain takes the written part's mean magnitude; zero stays zero.
    out = ablate.centre_balanced(torch.tensor([0.2, 0.4]), (4,), base=torch.ones(4))
    assert torch.allclose(out, torch.tensor([0.3, 0.2, 0.4, 0.3]))
    zero = ablate.centre_balanced(torch.tensor([0.2, 0.4]), (4,), base=torch.zeros(4))
    assert torch.equal(zero, torch.tensor([0.0, 0.2, 0.4, 0.0]))


def test_variants_are_not_registered_in_hmt_itself() -> None:
    from hmt_cli.reshape import RULES

    assert not {"surplus-closing", "centre-initscale", "block-step", "block-nostem", "block-isolate"} & set(names())
    assert "centre_balanced" not in RULES  # the fixtures restored the registries


@needs_shared  # it runs the benchmark's smoke profile
def test_strategy_module_reaches_the_shards(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "quality.py"), "--profile", "smoke", "--out", str(tmp_path),
           "--config", str(ROOT / "configs" / "bench" / "arm2.yaml"), "--workers", "2",
           "--strategy-module", "benchmarks.variants.surplus", "--inits", "scratch,surplus-closing"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "complete", results["skipped"]
    assert {r["init"] for r in results["runs"]} == {"scratch", "surplus-closing"}


def test_dpiat_map_reads_dpiats_block_pairing_off_the_weights() -> None:
    import timm

    from benchmarks.peers.dpiat import DpiatUnavailable, load_iat
    from benchmarks.peers.dpiat_map import dpiat_map

    try:
        load_iat()
    except DpiatUnavailable as exc:  # the optional peer (README: benchmarks)
        pytest.skip(str(exc))
    mapping = dpiat_map(timm.create_model("resnet18", num_classes=5), timm.create_model("resnet50", num_classes=5))
    assert mapping["conv1"] == ["conv1"]
    # Whole blocks, in order: what the `block` strategy copies.
    assert (mapping["layer1.0.conv1"], mapping["layer1.0.conv2"]) == (["layer1.0.conv1"], ["layer1.0.conv2"])
    assert mapping["layer1.0.conv3"] == [] and mapping["layer1.0.downsample.0"] == []  # left at init
    assert mapping["layer2.0.conv3"] == ["layer2.0.downsample.0"]


def _registered_scales(module: str) -> Iterator[ModuleType]:
    """A variants module that adds scale kinds to hmt_cli's tables, registered for one test: its kinds are
    taken out of the tables again after it."""
    import hmt_cli.match.base as base
    from hmt_cli import health

    tables = (health._MEASURES, health._UP, health._WRITTEN, health._APPLIED)
    saved = base.SCALES, [type(t)(t) for t in tables]
    try:
        yield from _registered(module)
    finally:
        base.SCALES = saved[0]
        for table, before in zip(tables, saved[1], strict=True):
            table.clear()
            table.update(before)


@pytest.fixture
def lift() -> Iterator[ModuleType]:
    yield from _registered_scales("benchmarks.variants.lift")


@pytest.fixture
def rows() -> Iterator[ModuleType]:
    yield from _registered_scales("benchmarks.variants.rows")


def test_rows_lift_is_measured_on_the_source_box_and_applied_to_its_whole_output_channels(rows: ModuleType) -> None:
    import torch

    from hmt_cli import health
    from hmt_cli.match import TensorOp
    from hmt_cli.plan import TransferPlan

    ops = tuple(TensorOp(key, key, "centre", (2, 4), (1, 2), "a", "a", scale=scale)
                for key, scale in (("a.weight", rows.ROWS), ("a.bias", "layer")))
    plan = TransferPlan("t", "s", "t", 1, 1, (), ops, ())
    # Output channel 0 holds the source (+-1) in inputs 0-1 and the init (+-8) in inputs 2-3; channel 1 is init.
    weight = torch.tensor([[1.0, -1.0, 8.0, -8.0], [8.0, -8.0, 8.0, -8.0]])
    state = {"a.weight": weight.clone(), "a.bias": torch.tensor([0.5, 3.0])}
    regions = {"a.weight": (slice(0, 1), slice(0, 2)), "a.bias": (slice(0, 1),)}
    sizes = {"a.weight": 4.0 * float(torch.std(torch.tensor([1.0, -1.0])))}  # the init's std: 4x the source's
    assert health.region_keys(plan) == {"a.weight", "a.bias"}
    assert health.rescale(plan, sizes, state, regions) == []
    # The whole of channel 0 by the source's 4x (a per-channel factor a BatchNorm divides out), channel 1 untouched.
    assert torch.equal(state["a.weight"], torch.tensor([[4.0, -4.0, 32.0, -32.0], [8.0, -8.0, 8.0, -8.0]]))
    assert torch.equal(state["a.bias"], torch.tensor([2.0, 3.0]))


@pytest.mark.parametrize(("strategy", "partial"), [
    ("block-initscale-sqrt", lambda factor: factor ** 0.5),
    ("block-initscale-cap2", lambda factor: max(factor / 2.0, 1.0)),
    ("block-initscale-over1.5", lambda factor: factor if factor >= 1.5 else 1.0),
])
def test_partial_lifts_apply_their_share_of_initscales_factor(
        lift: ModuleType, tmp_path: Path, strategy: str, partial: Callable[[float], float]) -> None:
    from conftest import save_state, timm_state

    from benchmarks import scale_gap

    # A source of the target's own architecture (every weight fully covered), its conv weights shrunk:
    # block 1's 10x (a gap beyond the cap), the rest's 1.4x (within it).
    state = timm_state("test_efficientnet", seed=5)
    state = {k: v * (0.1 if ".1." in k else 0.7) if k.endswith(".weight") and v.dim() == 4 else v
             for k, v in state.items()}
    weights = save_state(state, tmp_path / "src.safetensors")
    args = ("test_efficientnet", weights, "test_efficientnet", 10, tmp_path)
    full = {k: f for k, f, _ in scale_gap.factors(*args)}
    part = {k: f for k, f, _ in scale_gap.factors(*args, strategy)}
    assert full.keys() == part.keys()
    assert sum(f > 5 for f in full.values()) >= 2 and sum(1.2 < f < 2.0 for f in full.values()) >= 5
    for key, factor in full.items():
        assert part[key] == pytest.approx(partial(factor), rel=1e-4), key



def test_block_isolate_is_block_with_the_isolated_weights(isolate: ModuleType) -> None:
    assert_isolates("block", "block-isolate")

"""``block-initscale-isolate``: ``centre``'s ``isolate`` parameter (the output channels holding a narrower
source's values read only the source's inputs) and the strategy that sets it on ``block-initscale``'s weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import assert_isolates, invoke_cli, plan_for, save_state, timm_state

from hmt_cli.reshape import RuleError, apply_rule, check_rule
from hmt_cli.reshape.centre import centre_region


def test_isolate_zeroes_the_rest_of_the_source_rows_and_keeps_every_other_row() -> None:
    # A (2, 2, 1, 1) source into a (4, 4, 3, 3) init of ones: centre puts it at rows 1-2, columns 1-2, the
    # middle tap. The rest of rows 1-2 (other inputs, outer taps) becomes zero; rows 0 and 3 keep the init.
    src = torch.arange(1.0, 5.0).reshape(2, 2, 1, 1)
    base = torch.ones(4, 4, 3, 3)
    out = apply_rule("centre", src, (4, 4, 3, 3), base, isolate=1)
    assert torch.equal(out[1:3, 1:3, 1, 1], src[:, :, 0, 0])
    assert int(torch.count_nonzero(out[1:3])) == 4
    assert torch.equal(out[[0, 3]], torch.ones(2, 4, 3, 3))
    assert torch.equal(base, torch.ones(4, 4, 3, 3))  # the init is not written through
    # Without isolate the same box, the init around it.
    plain = apply_rule("centre", src, (4, 4, 3, 3), base)
    assert torch.equal(plain[out != 0], out[out != 0]) and int(torch.count_nonzero(plain)) == 4 * 4 * 9
    # A source that covers the inputs and the taps (wider, cropped) has nothing to isolate: centre's result.
    wide = torch.randn(2, 6, 3, 3)
    assert torch.equal(apply_rule("centre", wide, (4, 4, 3, 3), base, isolate=1), apply_rule("centre", wide,
                                                                                             (4, 4, 3, 3), base))
    # With a scale and diagonal kernels (a full conv into a depthwise one) the box is the scaled diagonal.
    full = torch.randn(2, 2, 3, 3)
    dw = apply_rule("centre", full, (4, 1, 5, 5), torch.ones(4, 1, 5, 5), diagonal=1, isolate=1,
                    scale_permille=500)
    assert torch.equal(dw[1:3, 0, 1:4, 1:4], 0.5 * full[[0, 1], [0, 1]])
    assert int(torch.count_nonzero(dw[1:3])) == int(torch.count_nonzero(full[[0, 1], [0, 1]]))


def test_isolate_is_checked() -> None:
    with pytest.raises(RuleError, match="rank >= 2"):
        check_rule("centre", (4,), (8,), isolate=1)
    with pytest.raises(RuleError, match="must be 0 or 1"):
        check_rule("centre", (2, 2), (4, 4), isolate=2)


def test_the_strategy_isolates_block_initscales_weights_only() -> None:
    assert_isolates("block-initscale", "block-initscale-isolate")


def test_a_narrow_source_is_written_as_a_sub_network(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    weights = save_state(timm_state("test_resnet", seed=5), tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    run = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", weights, "--tgt", "test_efficientnet",
                     "--out", out, "--strategy", "block-initscale-isolate", "--seed", 0, "--quiet")
    assert run.code == 0, run
    state, init = load_file(str(out)), timm_state("test_efficientnet", seed=0)
    plan = plan_for("block-initscale-isolate", "test_resnet", "test_efficientnet")
    checked = 0
    for op in plan.ops:
        if ("isolate", 1) not in op.params:
            continue
        written = (min(op.src_shape[:2]), 1, *op.src_shape[2:]) if ("diagonal", 1) in op.params else op.src_shape
        region = centre_region(tuple(written), op.tgt_shape)
        if region is None:
            continue
        w, rows = state[op.tgt_key], region[0]
        mask = torch.zeros_like(w, dtype=torch.bool)
        mask[region] = True
        assert not w[rows][~mask[rows]].any(), op.tgt_key  # source rows: zero outside the box
        others = torch.ones(w.shape[0], dtype=torch.bool)
        others[rows] = False
        # Every other row is the target's init, times the layer's one lift factor (>= 1).
        if others.any():
            ratio = w[others] / init[op.tgt_key][others]
            assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio)) and ratio.flatten()[0] >= 1, op.tgt_key
        checked += int(bool((~mask[rows]).any()))
    assert checked >= 3  # test_resnet is narrower than test_efficientnet in several layers

    import timm

    timm.create_model("test_efficientnet").load_state_dict(state, strict=True)


# --- block-initscale-auto: isolate only from a source much narrower than the target ----------------------

NARROW_SRC = "benchmarks.cifar_resnet:resnet20"  # a CIFAR ResNet: its widest layer has 64 channels


@pytest.mark.parametrize(("src", "tgt", "same_as", "not_as"), [
    (NARROW_SRC, "mobilenetv3_small_050", "block-initscale-isolate", "block-initscale"),  # 64 against 1024
    (NARROW_SRC, "resnet10t", "block-initscale-isolate", "block-initscale"),  # 64 against 512: 1/8
    ("resnet18", "resnet50", "block-initscale", "block-initscale-isolate"),  # 512 against 2048: 1/4, not under
    ("test_resnet", "test_efficientnet", "block-initscale", "block-initscale-isolate"),  # 192 against 256
])
def test_auto_writes_one_of_the_two_measured_plans_by_the_width_ratio(src: str, tgt: str, same_as: str,
                                                                     not_as: str) -> None:
    auto, same = plan_for("block-initscale-auto", src, tgt), plan_for(same_as, src, tgt)
    assert (auto.ops, auto.pairs, auto.skipped) == (same.ops, same.pairs, same.skipped)
    assert auto.note.startswith(f"{same_as} (the source's widest layer has ")
    assert plan_for(not_as, src, tgt).ops != auto.ops  # the two differ on each pair: the branch is observable


def test_widest_ignores_the_classifier_head() -> None:
    from hmt_cli.match.isolate import much_narrower
    from hmt_cli.pipeline import analyze

    small = analyze("benchmarks.cifar_resnet:resnet20").graph
    assert small.widest == 64
    # With 1,000 classes resnet20's head would be the widest layer; it is not counted.
    assert analyze("benchmarks.cifar_resnet:resnet20", {"num_classes": 1000}).graph.widest == 64
    assert much_narrower(small, analyze("mobilenetv3_small_050").graph)
    assert not much_narrower(small, small)


def test_auto_says_which_plan_it_wrote_and_writes_its_tensors(tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file

    from benchmarks.cifar_resnet import resnet20

    torch.manual_seed(3)
    weights = save_state(resnet20().state_dict(), tmp_path / "src.safetensors")
    files = {}
    for strategy in ("block-initscale-auto", "block-initscale-isolate"):
        files[strategy] = tmp_path / f"{strategy}.safetensors"
        run = invoke_cli("transfer", "--src", NARROW_SRC, "--src-weights", weights, "--tgt", "mobilenetv3_small_050",
                         "--out", files[strategy], "--strategy", strategy, "--json")
        assert run.code == 0, run
        if strategy == "block-initscale-auto":
            report = json.loads(run.stdout)  # the real transfer's own report
    assert report["strategy"] == "block-initscale-auto"
    assert report["strategy_note"].startswith(
        "block-initscale-isolate (the source's widest layer has 64 channels, the target's 1024")
    auto, iso = (load_file(str(files[s])) for s in ("block-initscale-auto", "block-initscale-isolate"))
    assert auto.keys() == iso.keys() and all(torch.equal(auto[k], iso[k]) for k in auto)
    shown = invoke_cli("transfer", "--src", NARROW_SRC, "--tgt", "mobilenetv3_small_050",
                       "--strategy", "block-initscale-auto", "--dry-run")
    text = " ".join(shown.stderr.split())  # the human report goes to stderr; Rich may wrap the line
    assert shown.code == 0 and "block-initscale-auto: block-initscale-isolate (the source's widest" in text

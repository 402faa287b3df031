"""The data-free signal check: what it flags, whom it blames, and that it never changes the state it checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hmt_cli.health import batch_statistics, channel_std, check


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
    ).eval()


PATHS = ["0", "3", "6"]


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_an_untouched_state_passes() -> None:
    model = small_net()
    signals = check(model, state_of(model), PATHS, (3, 16, 16), seed=0)
    assert [s.path for s in signals] == PATHS
    assert all(not s.flagged for s in signals)
    assert all(abs(s.ratio - 1.0) < 1e-6 for s in signals)


def test_a_zero_norm_gain_is_blamed_on_its_layer_not_on_the_next() -> None:
    """A zero BatchNorm gain carried over (timm zero-inits a ResNet block's last one) kills the next input."""
    model = small_net()
    state = state_of(model)
    state["1.weight"] = torch.zeros(8)  # the norm after layer "0"
    state["1.bias"] = torch.zeros(8)
    signals = {s.path: s for s in check(model, state, PATHS, (3, 16, 16), seed=0)}
    assert signals["0"].status == "ok" and signals["0"].after == "collapsed" and signals["0"].flagged
    assert not signals["3"].flagged  # fed a constant, it is not blamed for passing it on
    assert not signals["6"].flagged


def test_exploding_weights_are_flagged_where_they_are() -> None:
    model = small_net()
    state = state_of(model)
    state["3.weight"] = state["3.weight"] * 1e4
    signals = {s.path: s for s in check(model, state, PATHS, (3, 16, 16), seed=0)}
    assert signals["3"].status == "exploded"
    assert not signals["0"].flagged


def test_batch_statistics_touch_no_buffer_and_restore_modes() -> None:
    model = small_net()
    before = state_of(model)
    state = state_of(model)
    state["3.weight"] = state["3.weight"] * float("inf")  # even non-finite activations must not leak into buffers
    check(model, state, PATHS, (3, 16, 16), seed=0)
    for key, value in state_of(model).items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(state["1.running_var"], before["1.running_var"])
    assert int(state["1.num_batches_tracked"]) == int(before["1.num_batches_tracked"])
    assert not model.training and all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with batch_statistics(model) as has_bn:
        assert has_bn and model[1].training and not model[0].training


def test_the_check_uses_batch_statistics() -> None:
    """Running statistics measured on other weights (a source's) do not decide the verdict: batch ones do."""
    model = small_net()
    state = state_of(model)
    state["1.running_var"] = torch.full((8,), 1e-12)  # in eval mode this would blow the signal up 1e6x
    signals = check(model, state, PATHS, (3, 16, 16), seed=0)
    assert all(not s.flagged for s in signals)


def test_no_blame_across_a_merge() -> None:
    """Where the next layer's input also carries a residual branch, a break is not the previous layer's."""
    model = small_net()
    state = state_of(model)
    state["1.weight"] = torch.zeros(8)
    state["1.bias"] = torch.zeros(8)
    signals = {s.path: s for s in check(model, state, PATHS, (3, 16, 16), seed=0, direct=frozenset({"6"}))}
    assert signals["0"].after == "ok"


def test_direct_inputs_follow_the_graph() -> None:
    from hmt_cli.pipeline import _direct_inputs, analyze

    direct = _direct_inputs(analyze("resnet50"))
    assert {"layer1.0.conv2", "layer1.0.conv3", "layer3.2.conv2"} <= direct  # conv -> bn -> act -> conv
    assert "layer1.1.conv1" not in direct  # fed by the residual add of block 0
    assert "layer2.0.conv1" not in direct


@pytest.mark.parametrize("shape, channel_dim", [((2, 5, 7, 3), 1), ((4, 6), 1), ((2, 9, 5), 2)])
def test_channel_std_is_the_mean_per_channel_std(shape: tuple[int, ...], channel_dim: int) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * torch.arange(1, shape[channel_dim] + 1)\
        .reshape([-1 if d == channel_dim else 1 for d in range(len(shape))])
    per_channel = x.movedim(channel_dim, 0).reshape(shape[channel_dim], -1).std(dim=1)
    assert channel_std(x) == pytest.approx(float(per_channel.mean()), rel=1e-6)


def test_channel_std_of_a_constant_and_of_nan() -> None:
    assert channel_std(torch.full((2, 3, 4, 4), 5.0)) == 0.0
    assert channel_std(torch.ones(1, 3)) == 0.0  # one value per channel: no spread to measure
    bad = torch.randn(2, 3, 4, 4)
    bad[0, 1, 2, 2] = float("nan")
    assert channel_std(bad) != channel_std(bad)  # NaN propagates: the check reports it as non-finite

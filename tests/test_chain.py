"""Chain semantics on tiny hand-built topologies, one per case (docs/chain.md has the pictures).

Every model is built on the meta device: nothing is allocated, and the tracer must get shapes
and dataflow right without data. Each test states the exact chain and every off-chain reason.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hmt_cli.chain import account, find_chain
from hmt_cli.errors import UnsupportedModel
from hmt_cli.graph import extract_graph


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class Classifier(nn.Module):
    """Stem conv (8 channels) -> body -> pool -> fc; the fc is the head (a final linear giving (batch, classes))."""

    def __init__(self, body: nn.Module, width: int) -> None:
        super().__init__()
        self.stem = cbr(3, 8, stride=2)
        self.body = body
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


def analyze(model: nn.Module, extractor: str = "auto") -> tuple[Any, Any, list[str], dict[str, str]]:
    graph = extract_graph(model.eval(), type(model).__name__, extractor)
    chain = find_chain(graph)
    owners = account(graph, chain)
    assert set(owners) == set(model.state_dict()), "every state-dict key is accounted for"
    return graph, chain, [n.path for n in chain.layers], {o.path: o.reason for o in chain.off_chain}


def meta(factory: Any, *args: Any) -> nn.Module:
    with torch.device("meta"):
        return factory(*args)


def test_plain_chain() -> None:
    graph, chain, paths, off = analyze(meta(Classifier, nn.Sequential(cbr(8, 16), cbr(16, 16, stride=2)), 16))
    assert paths == ["stem.0", "body.0.0", "body.1.0"]
    assert off == {"fc": "head"}
    assert graph.extractor == "fx"
    assert [n.norm for n in chain.layers] == ["stem.1", "body.0.1", "body.1.1"]
    assert [n.reduction for n in chain.layers] == [2, 2, 4]


class Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.conv2 = cbr(cin, cout, stride=stride), cbr(cout, cout)
        self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + shortcut)


def test_residual_identity_shortcut() -> None:
    _, _, paths, off = analyze(meta(Classifier, nn.Sequential(Residual(8, 8), Residual(8, 8)), 8))
    assert paths == ["stem.0", "body.0.conv1.0", "body.0.conv2.0", "body.1.conv1.0", "body.1.conv2.0"]
    assert off == {"fc": "head"}


def test_residual_projection_shortcut_is_off_chain() -> None:
    graph, _, paths, off = analyze(meta(Classifier, nn.Sequential(Residual(8, 16, 2), Residual(16, 16)), 16))
    assert paths == ["stem.0", "body.0.conv1.0", "body.0.conv2.0", "body.1.conv1.0", "body.1.conv2.0"]
    assert off == {"body.0.downsample.0": "shortcut", "fc": "head"}
    assert graph.layer("body.0.downsample.0").norm == "body.0.downsample.1"


def test_cuts_and_residual_closing_layers() -> None:
    """Which layers every signal passes (cuts), and which close a residual branch (output only into an add)."""
    model = meta(Classifier, nn.Sequential(cbr(8, 8), Residual(8, 16, 2), Residual(16, 16), cbr(16, 16)), 16)
    graph, _, _, _ = analyze(model)
    index = {n.path: n.index for n in graph.layers}
    cuts = {p for p, i in index.items() if i not in graph.bypassed}
    # The shortcuts (projection and identity) route around both blocks; the stem, the plain layer
    # after the blocks and the head are passed by every signal.
    assert cuts == {"stem.0", "body.0.0", "body.3.0", "fc"}
    closing = {p for p, i in index.items() if i in graph.closes_residual}
    # body.2's conv2 reaches body.3 through the add, like both blocks' shortcuts (the projection too).
    assert closing == {"body.1.conv2.0", "body.1.downsample.0", "body.2.conv2.0"}


def test_depthwise_separable_kinds() -> None:
    body = nn.Sequential(cbr(8, 8, groups=8), cbr(8, 32, k=1), cbr(32, 32, groups=4))
    _, chain, paths, off = analyze(meta(Classifier, body, 32))
    assert paths == ["stem.0", "body.0.0", "body.1.0", "body.2.0"]
    assert [n.kind for n in chain.layers] == ["conv", "depthwise", "conv", "grouped"]
    assert off == {"fc": "head"}


class LongSqueezeExcite(nn.Module):
    """A gate branch of three layers beside a main path of none: the gate still stays off the chain."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Conv2d(c, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.fc3(F.relu(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))))
        return x * s.sigmoid()


def test_squeeze_excite_gate_longer_than_main_path() -> None:
    body = nn.Sequential(cbr(8, 8), LongSqueezeExcite(8), cbr(8, 8))
    _, _, paths, off = analyze(meta(Classifier, body, 8))
    assert paths == ["stem.0", "body.0.0", "body.2.0"]
    assert off == {"body.1.fc1": "gate", "body.1.fc2": "gate", "body.1.fc3": "gate", "fc": "head"}


class ECA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1)).view(x.shape[0], -1, 1, 1)
        return x * torch.sigmoid(y)


def test_eca_gate() -> None:
    _, _, paths, off = analyze(meta(Classifier, nn.Sequential(cbr(8, 8), ECA(), cbr(8, 8)), 8))
    assert paths == ["stem.0", "body.0.0", "body.2.0"]
    assert off == {"body.1.conv": "gate", "fc": "head"}


class Dense(nn.Module):
    """DenseNet-style: every layer reads the concatenation of all earlier outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.l1, self.l2, self.l3 = cbr(8, 4), cbr(12, 4), cbr(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.l1(x)
        x2 = self.l2(torch.cat([x, x1], 1))
        return torch.cat([x, x1, x2, self.l3(torch.cat([x, x1, x2], 1))], 1)


def test_dense_concat_puts_every_layer_on_the_chain() -> None:
    model = meta(Classifier, Dense(), 8)
    model.fc = meta(nn.Linear, 20, 10)  # the block outputs 8 + 3 * 4 channels
    _, _, paths, off = analyze(model)
    assert paths == ["stem.0", "body.l1.0", "body.l2.0", "body.l3.0"]
    assert off == {"fc": "head"}


class Inception(nn.Module):
    """Parallel branches of 1, 2, 3, 1 (after a pool) and 2 layers, concatenated."""

    def __init__(self, c: int, longest: bool) -> None:
        super().__init__()
        self.longest = longest
        self.b1 = cbr(c, 4, k=1)
        self.b2_1, self.b2_2 = cbr(c, 4, k=1), cbr(4, 4)
        self.b3_1, self.b3_2, self.b3_3 = cbr(c, 4, k=1), cbr(4, 4), cbr(4, 4)
        self.b4 = cbr(c, 4, k=1)
        self.b5_1, self.b5_2 = cbr(c, 4, k=1), cbr(4, 4)  # as long as b2
        self.out = cbr(20 if longest else 16, c, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.b1(x), self.b2_2(self.b2_1(x)), self.b4(F.avg_pool2d(x, 3, 1, 1)), self.b5_2(self.b5_1(x))]
        if self.longest:
            branches.append(self.b3_3(self.b3_2(self.b3_1(x))))
        return self.out(torch.cat(branches, 1))


def test_inception_longest_branch_on_chain() -> None:
    _, _, paths, off = analyze(meta(Classifier, Inception(8, longest=True), 8))
    assert paths == ["stem.0", "body.b3_1.0", "body.b3_2.0", "body.b3_3.0", "body.out.0"]
    assert off == {f"body.{b}.0": "branch" for b in ("b1", "b2_1", "b2_2", "b4", "b5_1", "b5_2")} | {"fc": "head"}


def test_inception_tie_goes_to_the_branch_executed_first() -> None:
    _, _, paths, off = analyze(meta(Classifier, Inception(8, longest=False), 8))
    assert paths == ["stem.0", "body.b2_1.0", "body.b2_2.0", "body.out.0"]
    unused = {f"body.{b}.0": "unused" for b in ("b3_1", "b3_2", "b3_3")}
    assert off == {f"body.{b}.0": "branch" for b in ("b1", "b4", "b5_1", "b5_2")} | unused | {"fc": "head"}


class TinyViT(nn.Module):
    """Patch embedding, position embedding and class token, attention (separate or fused q/k/v), MLP."""

    def __init__(self, fused: bool, dim: int = 16) -> None:
        super().__init__()
        self.fused = fused
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.pos_embed = nn.Parameter(torch.zeros(1, 197, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm1, self.norm2, self.norm = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.rel_pos = nn.Parameter(torch.zeros(197, 197))
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.head = nn.Linear(dim, 10)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # the weight used functionally, as swinv2 and dinov3 do
            q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        attn = (q @ k.transpose(-2, -1) + self.rel_pos).softmax(-1)
        return self.proj(attn @ v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = x + self.attention(self.norm1(x))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(self.norm(x)[:, 0])


@pytest.mark.parametrize("fused", [False, True], ids=["separate-qkv", "fused-qkv-functional"])
def test_attention_block(fused: bool) -> None:
    graph, chain, paths, off = analyze(meta(TinyViT, fused))
    qkv = ["qkv"] if fused else ["q", "k", "v"]
    assert paths == ["patch", *qkv, "proj", "fc1", "fc2"]
    assert off == {"head": "head"}
    owners = account(graph, chain)
    # The final norm feeds the head only: it is the head's (pre-)norm.
    assert {k: owners[k] for k in ("pos_embed", "cls_token", "rel_pos", "norm.weight")} == {
        "pos_embed": "embedding", "cls_token": "embedding", "rel_pos": "embedding", "norm.weight": "head"}
    assert graph.layer(qkv[0]).norm == "norm1"
    assert graph.layer("fc1").norm == "norm2"


class Functional(nn.Module):
    """Bare parameters used through F.conv2d / F.linear, and a position MLP fed by a buffer only."""

    def __init__(self) -> None:
        super().__init__()
        self.w_stem = nn.Parameter(torch.zeros(8, 3, 3, 3))
        self.w_mix = nn.Parameter(torch.zeros(8, 8, 1, 1))
        self.gain = nn.Parameter(torch.ones(8))
        self.w_out = nn.Parameter(torch.zeros(10, 8))
        self.register_buffer("coords", torch.zeros(49, 2))
        self.pos_mlp = nn.Linear(2, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.w_stem, stride=2, padding=1)
        x = F.conv2d(x, self.w_mix) * self.gain.view(1, -1, 1, 1)
        pos = self.pos_mlp(self.coords).mean(0).view(1, -1, 1, 1)
        return F.linear((x + pos).mean((2, 3)), self.w_out)


def test_functional_parameters() -> None:
    graph, chain, paths, off = analyze(meta(Functional))
    assert paths == ["w_stem", "w_mix"]
    assert off == {"pos_mlp": "embedding", "w_out": "head"}
    owners = account(graph, chain)
    assert owners["gain"] == "scale" and owners["coords"] == "buffer"


class Shared(nn.Module):
    """One conv applied twice, and a weight tied between two modules."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.twice = nn.Conv2d(8, 8, 3, 1, 1)
        self.a, self.b = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1)
        self.b.weight = self.a.weight
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.twice(self.twice(self.stem(x)))
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def test_weight_sharing() -> None:
    graph, chain, paths, off = analyze(meta(Shared))
    assert paths == ["stem", "twice", "a"]  # a module called again is one layer, at its first call
    owners = account(graph, chain)
    assert owners["b.weight"] == owners["a.weight"] == owners["b.bias"] == "chain"
    assert off == {"fc": "head"}


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.pos, self.neg, self.fc = cbr(3, 8), cbr(8, 8), nn.Conv2d(8, 8, 1), nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.pos(x) if x.sum() > 0 else self.neg(x)
        return self.fc(x.mean((2, 3)))


def test_data_dependent_control_flow_falls_back_to_exec() -> None:
    with pytest.raises(UnsupportedModel, match="fx: TraceError"):
        extract_graph(meta(DataDependent).eval(), "dd", "fx")
    graph, _, paths, off = analyze(meta(DataDependent))
    assert graph.extractor == "exec" and graph.guesses == 1
    assert paths == ["stem.0", "pos.0"]  # the guessed branch (True)
    assert off == {"fc": "head", "neg": "unused"}


def test_no_weight_layer_is_a_documented_error() -> None:
    with pytest.raises(UnsupportedModel, match="no conv or linear layer"):
        extract_graph(meta(nn.Sequential, nn.ReLU()), "relu")

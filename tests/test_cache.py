"""The analysis cache: a hit equals a fresh analysis, and a bad or missing cache never changes a run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import invoke_cli, save_state, timm_state

from hmt_cli.cache import cache_key, decode, encode
from hmt_cli.pipeline import Analysis, analyze


def timeless(a: Analysis) -> Analysis:
    """The analysis without its tracing time, which differs between two fresh computations."""
    return replace(a, graph=replace(a.graph, seconds=0.0))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("HMT_CACHE_DIR", str(folder))
    return folder


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit"])
def test_codec_round_trips_a_real_analysis(name: str) -> None:
    fresh = analyze(name)
    value = (fresh.graph, fresh.chain, fresh.param_keys)
    assert decode(encode(value)) == value
    # Int-keyed mappings and frozensets come back as themselves, not as JSON's strings and lists.
    assert decode(encode({3: frozenset({1, 2})})) == {3: frozenset({1, 2})}


def test_a_hit_equals_a_fresh_analysis(cache: Path) -> None:
    first = analyze("test_efficientnet", num_classes=7)
    entries = list(cache.glob("*.json"))
    assert len(entries) == 1
    again = analyze("test_efficientnet", num_classes=7)
    assert again == first
    assert again.graph.param_shapes["classifier.weight"] == (7, first.graph.param_shapes["classifier.weight"][1])


def test_arguments_are_part_of_the_key(cache: Path) -> None:
    a = analyze("test_efficientnet", num_classes=7)
    b = analyze("test_efficientnet", num_classes=5)
    c = analyze("test_efficientnet", {"in_chans": 1}, num_classes=7)
    assert len(list(cache.glob("*.json"))) == 3
    assert a.graph.param_shapes["classifier.weight"][0] == 7 and b.graph.param_shapes["classifier.weight"][0] == 5
    assert c.graph.input_shape[0] == 1
    assert cache_key(model="m", kwargs={}) != cache_key(model="m", kwargs={"x": 1})


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"dc": "os.system", "f": {}}', b'{"t": 5}'])
def test_a_corrupt_entry_is_recomputed_and_replaced(cache: Path, garbage: bytes) -> None:
    fresh = analyze("test_resnet")
    (entry,) = cache.glob("*.json")
    entry.write_bytes(garbage)
    recomputed = analyze("test_resnet")
    assert timeless(recomputed) == timeless(fresh)
    assert entry.read_bytes() != garbage  # rewritten with the good value
    assert analyze("test_resnet") == recomputed


def test_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HMT_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    analyze("test_resnet")
    assert list(tmp_path.rglob("*")) == []


def test_user_factories_are_not_cached(cache: Path) -> None:
    analyze("benchmarks.cifar_resnet:resnet20")
    assert not cache.exists() or list(cache.glob("*.json")) == []


def test_an_unwritable_cache_does_not_fail_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HMT_CACHE_DIR", str(blocker / "cache"))
    assert analyze("test_resnet").chain.layers
    assert list(tmp_path.iterdir()) == [blocker]


def test_the_signal_reference_is_cached_and_changes_nothing(cache: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The init's reference pass runs once per (model, arguments, head, seed); hits give the same bytes."""
    import hmt_cli.health as health

    weights = save_state(timm_state("test_resnet", seed=1), tmp_path / "src.safetensors")
    calls = []
    measured = health.reference
    monkeypatch.setattr(health, "reference", lambda *a, **k: calls.append(1) or measured(*a, **k))

    def run(name: str, *extra: object) -> bytes:
        out = tmp_path / name
        result = invoke_cli("transfer", "--src", "test_resnet", "--src-weights", weights, "--tgt", "test_efficientnet",
                            "--out", out, "--quiet", *extra)
        assert result.code == 0, result
        return out.read_bytes()

    first = run("a.safetensors")
    assert len(calls) == 1
    assert run("b.safetensors") == first and len(calls) == 1  # a hit: no reference pass
    run("c.safetensors", "--seed", 1)
    assert len(calls) == 2  # another seed is another init
    monkeypatch.setenv("HMT_CACHE_DIR", "off")
    assert run("d.safetensors") == first and len(calls) == 3

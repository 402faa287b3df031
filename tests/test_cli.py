"""The ``hmt`` CLI end to end, through Typer's CliRunner and through real processes.

Real timm models with weights the tests create: resnet18 -> mobilenetv3_small_100 and
resnet18 -> efficientnet_b0. Outputs must load strictly through ``pretrained_cfg_overlay`` and give
finite logits; the metadata, ``--json``, ``--report``, ``--quiet``, ``--dry-run``, ``--config`` and
``--src-arg/--tgt-arg`` behave as documented; ``hmt --help`` answers without importing torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import (
    REPO,
    Transfer,
    invoke_cli,
    offline_env,
    run_hmt,
    save_state,
    sha256,
    timm_state,
    tmp_files,
)

from hmt_cli import __version__
from hmt_cli.match import names
from hmt_cli.reshape import apply_rule

SRC, TGT = "resnet18", "mobilenetv3_small_100"
METADATA_FIELDS = {"hmt_version", "src", "tgt", "src_weights", "strategy", "seed", "mapping"}


def load_strict(name: str, path: Path, **kwargs: Any) -> torch.nn.Module:
    """The way a user loads the init: timm's own pretrained loader, strict by default."""
    import timm

    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()


def assert_finite_forward(model: torch.nn.Module, size: int = 224) -> None:
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)))
    assert bool(torch.isfinite(logits).all())


def metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    return json.loads(meta["hmt"])


def tensor(path: Path, key: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return fh.get_tensor(key)


def transfer_args(weights: Path, out: Path, *extra: Any, src: str = SRC, tgt: str = TGT) -> list[Any]:
    return ["transfer", "--src", src, "--tgt", tgt, "--src-weights", weights, "--out", out, "--device", "cpu",
            *extra]


def test_output_loads_strictly_and_runs(r18_mbv3_in_process: Transfer) -> None:
    assert_finite_forward(load_strict(TGT, r18_mbv3_in_process.out))
    assert tmp_files(r18_mbv3_in_process.out.parent) == []


def test_metadata_describes_the_transfer(r18_mbv3_in_process: Transfer, r18_safetensors: Path) -> None:
    meta = metadata(r18_mbv3_in_process.out)
    assert set(meta) >= METADATA_FIELDS
    assert meta["hmt_version"] == __version__
    # No --strategy: the default, hmt's own `block-initscale-auto` (resnet18 is not much narrower than the
    # target, so its plan is `block-initscale`'s, whose tensor rule is `centre`'s).
    assert (meta["src"], meta["tgt"], meta["strategy"], meta["seed"]) == (SRC, TGT, "block-initscale-auto", 0)
    assert meta["src_weights"] == f"sha256:{sha256(r18_safetensors)}"
    first = meta["mapping"][0]
    assert (first["src"], first["tgt"], first["rule"]) == ("conv1.weight", "conv_stem.weight", "centre")


def test_json_is_the_only_thing_on_stdout(r18_mbv3_in_process: Transfer) -> None:
    data = json.loads(r18_mbv3_in_process.run.stdout)  # raises on anything before or after the one document
    assert (data["src"], data["tgt"], data["out"]) == (SRC, TGT, str(r18_mbv3_in_process.out))
    assert data["layers_transferred"] > 0 and 0 < data["frac_params_written"] <= 1


def test_report_file_is_the_same_json(r18_mbv3_in_process: Transfer) -> None:
    assert json.loads(r18_mbv3_in_process.report.read_text()) == json.loads(r18_mbv3_in_process.run.stdout)


def test_stem_is_the_centre_rule_into_the_seeded_init_lifted_to_its_scale(
        r18_mbv3_in_process: Transfer, r18_state: dict[str, Any]) -> None:
    import timm

    torch.manual_seed(0)  # --seed 0: the target's own init, which `centre` writes the source into
    base = timm.create_model(TGT).state_dict()["conv_stem.weight"]
    stem = tensor(r18_mbv3_in_process.out, "conv_stem.weight")
    written = apply_rule("centre", r18_state["conv1.weight"], tuple(stem.shape), base=base)
    # The default, block-initscale: the stem feeds a BatchNorm, so it is lifted to the init's std when smaller.
    factor = max(float(base.std() / written.std()), 1.0)
    assert torch.allclose(stem, written * factor, rtol=1e-5, atol=1e-7)
    assert float(stem.std()) >= float(base.std()) * (1 - 1e-5)
    assert not torch.equal(stem, base)


def test_output_holds_every_target_tensor(r18_mbv3_in_process: Transfer) -> None:
    import timm
    from safetensors import safe_open

    expected = timm.create_model(TGT, device="meta").state_dict()
    with safe_open(str(r18_mbv3_in_process.out), framework="pt") as fh:
        assert set(fh.keys()) == set(expected)
        for key, value in expected.items():
            assert tuple(fh.get_slice(key).get_shape()) == tuple(value.shape), key


def test_human_report_goes_to_stderr(r18_mbv3_in_process: Transfer) -> None:
    stderr = r18_mbv3_in_process.run.stderr  # --json moves the result to stdout; the table stays on stderr
    assert "conv_stem" in stderr and "conv1" in stderr and "centre" in stderr
    assert max(len(line) for line in stderr.splitlines()) <= 120  # COLUMNS pins Rich's width


def test_quiet_prints_nothing(tmp_path: Path, r18_safetensors: Path) -> None:
    out = tmp_path / "x.safetensors"
    run = invoke_cli(*transfer_args(r18_safetensors, out, "--quiet"))
    assert (run.code, run.stdout, run.stderr) == (0, "", ""), run
    assert out.is_file()


def test_dry_run_writes_nothing(tmp_path: Path, r18_safetensors: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    run = invoke_cli(*transfer_args(r18_safetensors, out_dir / "x.safetensors", "--dry-run", "--json"))
    assert run.code == 0, run
    data = json.loads(run.stdout)
    assert data["dry_run"] is True and data["rows"]
    assert list(out_dir.iterdir()) == []


def test_torch_checkpoint_to_efficientnet(tmp_path: Path, r18_pth: Path) -> None:
    """A ``{"state_dict": {"module.*": ...}}`` training checkpoint, into a different family."""
    out = tmp_path / "effnet.safetensors"
    run = invoke_cli(*transfer_args(r18_pth, out, "--quiet", tgt="efficientnet_b0"))
    assert run.code == 0, run
    assert_finite_forward(load_strict("efficientnet_b0", out))
    assert metadata(out)["src_weights"] == f"sha256:{sha256(r18_pth)}"


def test_num_classes_sets_the_head(tmp_path: Path, r18_safetensors: Path) -> None:
    out = tmp_path / "x.safetensors"
    run = invoke_cli(*transfer_args(r18_safetensors, out, "--num-classes", 10, "--quiet"))
    assert run.code == 0, run
    model = load_strict(TGT, out, num_classes=10)
    assert model.get_classifier().out_features == 10
    assert metadata(out)["num_classes"] == 10


def test_model_arguments(tmp_path: Path, weights_dir: Path) -> None:
    """--src-arg builds the source the checkpoint came from; --tgt-arg shapes the target (a 64 px ViT)."""
    gray = save_state(timm_state(SRC, in_chans=1), weights_dir / "resnet18_gray.safetensors")
    out = tmp_path / "vit64.safetensors"
    extra = ("--tgt-arg", "img_size=64", "--quiet")
    run = invoke_cli(*transfer_args(gray, out, *extra, "--src-arg", "in_chans=1", tgt="vit_tiny_patch16_224"))
    assert run.code == 0, run
    assert_finite_forward(load_strict("vit_tiny_patch16_224", out, img_size=64), size=64)
    meta = metadata(out)
    assert (meta["src_kwargs"], meta["tgt_kwargs"]) == ({"in_chans": 1}, {"img_size": 64})
    # The same file read as a default (3-channel) resnet18: its stem does not fit.
    without = invoke_cli(*transfer_args(gray, tmp_path / "other.safetensors", *extra, tgt="vit_tiny_patch16_224"))
    assert without.code == 5 and "conv1.weight" in without.stderr, without


# --- --config ----------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", names())  # every strategy ships a preset
def test_presets_as_shipped(preset: str) -> None:
    run = invoke_cli("transfer", "--config", REPO / "configs" / f"{preset}.toml", "--dry-run", "--json")
    assert run.code == 0, run
    data = json.loads(run.stdout)
    assert (data["src"], data["tgt"], data["strategy"], data["seed"]) == ("resnet50", "mobilenetv3_large_100",
                                                                          preset, 0)


def test_flags_override_the_preset(tmp_path: Path, r18_safetensors: Path, r18_state: dict[str, Any]) -> None:
    out = tmp_path / "x.safetensors"
    run = invoke_cli("transfer", "--config", REPO / "configs" / "paper.toml", "--src", SRC, "--tgt", TGT,
                     "--src-weights", r18_safetensors, "--out", out, "--seed", 5, "--quiet")
    assert run.code == 0, run
    meta = metadata(out)
    assert (meta["src"], meta["tgt"], meta["seed"], meta["strategy"]) == (SRC, TGT, 5, "paper")
    load_strict(TGT, out)
    # The paper's rule end to end: the stem is the source stem, bilinear kernels and cyclic channels.
    stem = tensor(out, "conv_stem.weight")
    assert torch.equal(stem, apply_rule("paper", r18_state["conv1.weight"], tuple(stem.shape)))


def test_preset_values_apply(tmp_path: Path, r18_safetensors: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text(f'[transfer]\nsrc = "{SRC}"\ntgt = "{TGT}"\nseed = 7\nnum-classes = 12\n'
                      f'src_weights = "{r18_safetensors}"\n\n[transfer.tgt_kwargs]\ndrop_rate = 0.1\n')
    run = invoke_cli("transfer", "--config", config, "--dry-run", "--json")
    assert run.code == 0, run
    data = json.loads(run.stdout)
    assert (data["seed"], data["src_weights"]) == (7, f"sha256:{sha256(r18_safetensors)}")


# --- real processes ----------------------------------------------------------------------------


def test_real_process(r18_mbv3_subprocess: Transfer) -> None:
    """``hmt transfer ... --json`` through the console script in a fresh process (the session fixture ran it).

    ``python -m hmt_cli transfer`` writes in test_determinism (ViT pair) and fails in test_errors (SIGINT, offline).
    """
    run, out = r18_mbv3_subprocess.run, r18_mbv3_subprocess.out
    assert json.loads(run.stdout)["out"] == str(out)
    assert "Traceback" not in run.stderr and "Warning:" not in run.stderr, run  # no Python warnings either
    assert metadata(out)["tgt"] == TGT
    assert tmp_files(out.parent) == []
    assert_finite_forward(load_strict(TGT, out))


def test_module_entry_point_version() -> None:
    run = run_hmt("version", module=True, timeout=60)
    assert (run.code, run.stdout.strip()) == (0, __version__), run


def test_help_is_fast_and_does_not_import_torch() -> None:
    probe = ("import sys; sys.argv = ['hmt', '--help']\n"
             "from hmt_cli.cli import main\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
             "heavy = sorted(m for m in ('torch', 'timm', 'safetensors', 'numpy') if m in sys.modules)\n"
             "print('HEAVY', heavy, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=offline_env(),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "transfer" in proc.stdout
    assert "HEAVY []" in proc.stderr, proc.stderr
    # Wall time of the real entry point; the best of three keeps a busy CI machine from failing it.
    walls = []
    for _ in range(3):
        start = time.perf_counter()
        run = run_hmt("--help", module=False, timeout=60)
        walls.append(time.perf_counter() - start)
        assert run.code == 0 and "transfer" in run.stdout, run
    assert min(walls) < 1.0, walls


def test_bare_hmt_shows_help() -> None:
    run = run_hmt(module=False, timeout=60)
    assert run.code == 0 and "Usage" in run.stdout, run


# --- the other commands ------------------------------------------------------------------------


def test_chain_json() -> None:
    run = invoke_cli("chain", SRC, "--json")
    assert run.code == 0, run
    data = json.loads(run.stdout)
    text = json.dumps(data)
    assert "conv1" in text and "layer4" in text


def test_models_json_limit() -> None:
    run = invoke_cli("models", "resnet1", "--json", "--limit", 3)
    assert run.code == 0, run
    data = json.loads(run.stdout)
    assert 0 < len(data["models"]) <= 3
    assert all("resnet1" in m["name"] for m in data["models"])


def test_models_limit_must_be_positive() -> None:
    run = invoke_cli("models", "resnet", "--limit", 0)
    assert run.code == 2 and "--limit" in run.stderr, run


def test_strategies() -> None:
    human = invoke_cli("strategies")
    assert human.code == 0 and "paper" in human.stderr and "block-initscale-auto (default)" in human.stderr, human
    assert human.stdout == "", human
    rows = json.loads(invoke_cli("strategies", "--json").stdout)
    assert {"paper", "stage", "centre", "block", "block-initscale"} <= {row["name"] for row in rows}
    assert [row["name"] for row in rows if row["default"]] == ["block-initscale-auto"]


@pytest.mark.parametrize("args", [("version",), ("--version",)])
def test_version(args: tuple[str, ...]) -> None:
    run = invoke_cli(*args)
    assert (run.code, run.stdout.strip(), run.stderr) == (0, __version__, ""), run


def test_rules_column_counts_runs_of_one_rule() -> None:
    from hmt_cli.report import rules_text

    assert rules_text(("centre",) * 6) == "centre x6"
    assert rules_text(("paper", "cyclic")) == "paper+cyclic"
    assert rules_text(("grouped",)) == "grouped"
    assert rules_text(("centre", "centre", "copy", "centre")) == "centre x2+copy+centre"


def test_device_auto_keeps_a_small_plan_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even with CUDA present, a plan this small is faster on the CPU (pipeline.AUTO_CUDA_ELEMENTS); on this
    # CUDA-less machine the transfer would fail had `auto` picked CUDA.
    from hmt_cli import pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    weights = save_state(timm_state("test_resnet"), tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    run = invoke_cli("transfer", "--src", "test_resnet", "--tgt", "test_efficientnet", "--src-weights", weights,
                     "--out", out, "--device", "auto", "--json")
    assert run.code == 0, run
    assert json.loads(run.stdout)["device"] == "cpu"
    assert pipeline._device("auto", pipeline.AUTO_CUDA_ELEMENTS - 1).type == "cpu"
    assert pipeline._device("auto", pipeline.AUTO_CUDA_ELEMENTS).type == "cuda"


def test_report_counts_the_source_values_inside_partly_written_tensors(tmp_path: Path) -> None:
    """`block` writes the narrow test_resnet into wider test_efficientnet layers by centre crop/pad: the
    tensors count as written, but only the elements that left the init hold source values."""
    import timm
    from safetensors.torch import load_file

    g = torch.Generator().manual_seed(5)
    # Trained-like: no source value equal to the init's (an untrained norm's 1s and 0s would be), so the
    # elements that left the init are exactly the ones the source filled.
    state = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in timm_state("test_resnet", seed=5).items()}
    weights = save_state(state, tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    run = invoke_cli(*transfer_args(weights, out, "--strategy", "block", "--num-classes", 10, "--json",
                                    src="test_resnet", tgt="test_efficientnet"))
    assert run.code == 0, run
    data = json.loads(run.stdout)
    init = timm_state("test_efficientnet", seed=0, num_classes=10)  # --seed 0: what the rules wrote into
    result = load_file(str(out))
    written = {r["key"] for r in data["tensors"] if r["status"] == "transferred"}
    params = {k for k, _ in timm.create_model("test_efficientnet", num_classes=10).named_parameters()}
    changed = sum(int((result[k] != init[k]).sum()) for k in written & params)
    assert data["params_from_source"] == changed
    assert 0 < changed < data["params_written"]
    assert data["frac_params_from_source"] == pytest.approx(changed / data["params_total"], abs=1e-6)
    human = invoke_cli(*transfer_args(weights, tmp_path / "h.safetensors", "--strategy", "block",
                                      "--num-classes", 10, src="test_resnet", tgt="test_efficientnet"))
    assert human.code == 0 and f"{changed:,} of the written" in human.stderr

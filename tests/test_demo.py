"""`hmt demo` end to end on scikit-learn's bundled digits (skipped without scikit-learn)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hmt_cli.cli import app


def test_demo_json_reports_both_accuracies_and_the_transfer() -> None:
    pytest.importorskip("sklearn")
    result = CliRunner().invoke(app, ["demo", "--json", "--quiet", "--shots", "5"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in ("src_acc", "scratch_acc", "transfer_acc"):
        assert 0.0 <= data[key] <= 1.0
    assert data["src_acc"] > 0.5  # the source really learned its half of the digits
    assert data["report"]["strategy"] == "block-initscale-auto" and data["report"]["frac_params_written"] > 0.5


def test_demo_reads_an_npz_and_rejects_a_bad_one(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=rng.integers(0, 255, (80, 8, 8), dtype=np.uint8), labels=np.repeat(np.arange(4), 20))
    result = CliRunner().invoke(app, ["demo", "--data", str(path), "--json", "--quiet", "--shots", "3"])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.npz"
    np.savez(bad, pixels=np.zeros((4, 8, 8)))
    result = CliRunner().invoke(app, ["demo", "--data", str(bad), "--quiet"])
    assert result.exit_code == 2
    assert "expected an .npz with 'images' and 'labels'" in result.output

"""Benchmark configs: ``configs/bench/arm*.yaml`` + a named profile -> one frozen :class:`ArmConfig`.

A config file holds the full protocol at its top level and, under ``profiles:``, the overrides that make
the cheaper profiles (deep-merged: mappings merge key by key, lists and scalars replace). Each profile
also carries a ``drops:`` sentence saying what it gives up relative to the protocol; it is copied into
``results.json`` and ``results.md`` so a number is never read without its conditions. A profile may
say ``extends: <profile>`` to start from another profile's overrides instead of the protocol.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ._quality_data import DataSpec
from ._quality_train import Recipe

__all__ = ["TargetSpec", "SourceSpec", "PretrainSpec", "ArmConfig", "load_arm", "deep_merge"]

PROFILES = ("smoke", "quick", "cpu", "full")
_IMG_SIZE_TOKEN = "${img_size}"  # in target kwargs: replaced by the arm's working resolution


@dataclass(frozen=True)
class TargetSpec:
    name: str
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class SourceSpec:
    model: str  # timm name or "package.module:callable"
    kwargs: Mapping[str, Any]
    weights: str | None  # relative to the shared dir unless absolute; None = trained by the benchmark
    eval_data: DataSpec | None = None  # where a given checkpoint's own accuracy is measured (calibration)


@dataclass(frozen=True)
class PretrainSpec:
    """The source recipe: trains the arm-1 source and every ``upper`` target."""

    data: DataSpec
    recipe: Recipe


@dataclass(frozen=True)
class ArmConfig:
    arm: str
    description: str
    profile: str
    drops: str
    img_size: int
    source: SourceSpec
    pretrain: PretrainSpec | None
    datasets: tuple[DataSpec, ...]  # a profile drops one by setting it to null
    targets: tuple[TargetSpec, ...]
    inits: tuple[str, ...]  # may hold the token "strategies" (every registered hmt strategy)
    upper_targets: tuple[str, ...] | None  # None = every target
    seeds: tuple[int, ...]
    finetune: Recipe
    budget_min: float
    resolved: Mapping[str, Any]  # the merged YAML, for results.json

    def has_upper(self, target: str) -> bool:
        return self.pretrain is not None and (self.upper_targets is None or target in self.upper_targets)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _recipe(raw: Mapping[str, Any]) -> Recipe:
    known = {f.name for f in fields(Recipe)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown recipe keys {unknown}; expected some of {sorted(known)}")
    return Recipe(**raw)


def _data(name: str, raw: Mapping[str, Any]) -> DataSpec:
    classes = raw.get("classes", "all")
    classes = tuple(range(10)) if classes == "all" else tuple(int(c) for c in classes)
    return DataSpec(
        name=name,
        dataset=str(raw["dataset"]),
        classes=classes,
        train_per_class=raw.get("train_per_class"),
        eval_per_class=raw.get("eval_per_class"),
    )


def _target(raw: str | Mapping[str, Any], img_size: int) -> TargetSpec:
    if isinstance(raw, str):
        return TargetSpec(raw, {})
    kwargs = {k: (img_size if v == _IMG_SIZE_TOKEN else v) for k, v in dict(raw.get("kwargs") or {}).items()}
    return TargetSpec(str(raw["name"]), kwargs)


def load_arm(path: Path, profile: str) -> ArmConfig:
    import yaml  # the `bench` extra

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    profiles = raw.pop("profiles", {}) or {}
    overrides = dict(profiles.get(profile, {}) or {})
    base = overrides.pop("extends", None)  # a profile may build on another one (cpu = quick + more)
    if base is not None:
        raw = deep_merge(raw, profiles.get(base, {}) or {})
    merged = deep_merge(raw, overrides)
    img_size = int(merged["img_size"])
    pre = merged.get("pretrain")
    pretrain = PretrainSpec(_data("pretrain", pre["data"]), _recipe(pre["recipe"])) if pre else None
    src = merged["source"]
    upper = merged.get("upper_targets", "all")
    return ArmConfig(
        arm=str(merged["arm"]),
        description=str(merged.get("description", "")).strip(),
        profile=profile,
        drops=str(merged.get("drops", "nothing: this is the protocol")).strip(),
        img_size=img_size,
        source=SourceSpec(
            str(src["model"]),
            dict(src.get("kwargs") or {}),
            src.get("weights"),
            _data("source_eval", src["eval"]) if src.get("eval") else None,
        ),
        pretrain=pretrain,
        datasets=tuple(_data(name, spec) for name, spec in merged["datasets"].items() if spec is not None),
        targets=tuple(_target(t, img_size) for t in merged["targets"]),
        inits=tuple(str(i) for i in merged["inits"]),
        upper_targets=None if upper == "all" else tuple(upper or ()),
        seeds=tuple(int(s) for s in merged["seeds"]),
        finetune=_recipe(merged["finetune"]),
        budget_min=float(merged["budget_min"]),
        resolved=merged,
    )

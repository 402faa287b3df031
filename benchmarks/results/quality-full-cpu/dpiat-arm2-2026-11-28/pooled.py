"""Amendment 4's pooled outcome: ``block-initscale-auto`` - scratch on mobilenetv3_large_100 Fashion-MNIST over
both AMD machines, each seed's difference taken on its own machine, then the differences pooled.

    python benchmarks/results/quality-full-cpu/dpiat-arm2-2026-11-28/pooled.py

The earlier machine ran the default's arm-2 plan under the name ``block-initscale-isolate`` (the same plan, op
for op: ``autoeq.txt``); this folder's AMD runs are the 2026-12-06 machine's.
"""

from __future__ import annotations

import statistics

from table import collect  # this folder's table.py (a script's own folder is on sys.path)

ROW = ("fashion_mnist", "mobilenetv3_large_100")
FOLDER = "dpiat-arm2-2026-11-28"


def diffs(acc: dict[tuple[str, str, str], dict[int, float]], default: str) -> list[float]:
    a, s = acc[(*ROW, default)], acc[(*ROW, "scratch")]
    return [100 * (a[k] - s[k]) for k in sorted(set(a) & set(s))]


def main() -> None:
    earlier = diffs(collect(None, "AMD", [FOLDER]), "block-initscale-isolate")
    here = diffs(collect(FOLDER, "AMD", []), "block-initscale-auto")
    for name, d in (("earlier AMD machine", earlier), ("2026-12-06 AMD machine", here), ("pooled", earlier + here)):
        se = statistics.stdev(d) / len(d) ** 0.5
        print(f"{name}: {statistics.mean(d):+.1f} ± {se:.1f} ({sum(x > 0 for x in d)}/{len(d)})  "
              f"[{', '.join(f'{x:+.1f}' for x in d)}]")


if __name__ == "__main__":
    main()

"""The I/O floor of one transfer: only the work no implementation can skip.

Run as ``python benchmarks/floor.py --src-weights SRC.safetensors --tgt NAME --out OUT.safetensors``:
import torch + timm, build the target on the CPU with a seeded init, read every source tensor from the
same file with ``safe_open`` and write the target's state dict with ``save_file``. ``benchmarks/speed.py``
times ``hmt transfer`` against this script, so it must stay this small: anything added here hides
overhead in hmt.

``--gc-tuned`` takes the process-level shortcut a CLI can take too: the garbage collector is off
while torch and timm import (their ~1M objects cost ~1 s of collections) and everything alive is
frozen before exit (the final collection over them costs ~1.5 s). Use it to compare against an hmt
that does the same, so that ~2.5 s of garbage collection does not sit in the comparison.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path


def read_all(path: Path) -> int:
    """Read every tensor of a safetensors file (what any transfer must at least touch); returns bytes."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        for key in fh.keys():  # noqa: SIM118  (safe_open handles are not mappings)
            tensor = fh.get_tensor(key)
            total += tensor.numel() * tensor.element_size()
            del tensor  # one tensor at a time: the floor holds no second model in memory
    return total


def write_target(name: str, out: Path, seed: int) -> int:
    """Build ``name`` with timm's init on the CPU and save its state dict; returns the tensor count."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}  # timm's are already contiguous
    save_file(state, str(out))
    return len(state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src-weights", type=Path, required=True)
    parser.add_argument("--tgt", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="print per-step seconds on stderr")
    parser.add_argument("--gc-tuned", action="store_true", help="no GC while importing, gc.freeze() before exit")
    args = parser.parse_args()

    start = time.perf_counter()
    if args.gc_tuned:
        gc.disable()
    import timm  # noqa: F401  (the floor pays for the same imports as hmt)
    import torch  # noqa: F401

    if args.gc_tuned:
        gc.freeze()  # the import-time objects leave the collector's generations for good
        gc.enable()
    imported = time.perf_counter()
    nbytes = read_all(args.src_weights)
    read = time.perf_counter()
    count = write_target(args.tgt, args.out, args.seed)
    done = time.perf_counter()
    if args.verbose:
        import sys

        print(
            f"imports {imported - start:.3f}s  read {nbytes / 1e6:.0f} MB {read - imported:.3f}s  "
            f"build+write {count} tensors {done - read:.3f}s",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()

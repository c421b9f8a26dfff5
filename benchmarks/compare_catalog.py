"""Compute time of a compare over the whole catalog: every model x every GPU x 3 contexts x 3 KV dtypes.

Run from the repository root with kvsize installed: python benchmarks/compare_catalog.py [--runs 5]

Spec loading is timed separately from the sizing, and neither includes
interpreter start-up. Combinations whose tensor-parallel size (1) the model
allows are all sized, including those that do not fit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions (default 5)")
    arguments = parser.parse_args()

    from kvsize.catalog import iter_specs
    from kvsize.planning import compare
    from kvsize.precision import parse_precision
    from kvsize.sizing import SizingRequest

    load_times, compute_times = [], []
    for _ in range(arguments.runs):
        start = time.perf_counter()
        models = list(iter_specs("models"))
        gpus = list(iter_specs("gpus"))
        loaded = time.perf_counter()
        rows = compare(models, gpus, SizingRequest(context_tokens=1), [8192, 32768, 131072], [1],
                       [parse_precision(name) for name in ("bf16", "fp8", "int4")], [None], [1])  # fmt: skip
        done = time.perf_counter()
        load_times.append(loaded - start)
        compute_times.append(done - loaded)

    print(f"{len(models)} models x {len(gpus)} GPUs x 3 contexts x 3 KV dtypes = {len(rows):,} rows, {arguments.runs} runs")
    print(f"loading every spec: median {statistics.median(load_times) * 1e3:.1f} ms")
    print(f"sizing every row:   median {statistics.median(compute_times) * 1e3:.1f} ms "
          f"(min {min(compute_times) * 1e3:.1f}, max {max(compute_times) * 1e3:.1f})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start-up benchmark: kvsize's common commands against a Typer + Rich baseline.

Run from the repository root with kvsize installed in the active environment:

    python benchmarks/startup.py [--runs 30]

Each command is run as a fresh process `--runs` times, alternating between
commands so that machine noise hits all of them alike. The script prints the
median wall time, the spread (interquartile range) and the ratio of each
median to the baseline's, then the targets and whether they are met. It uses
hyperfine when it is on PATH and a Python timer otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASELINE_SCRIPT = """\
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer()


@app.command()
def main() -> None:
    table = Table()
    table.add_column("quantity")
    table.add_column("value")
    table.add_row("KV per token", "320.00 KiB")
    Console().print(table)


app()
"""

CORE_SCRIPT = (
    "from kvsize.catalog import load_gpu, load_model\n"
    "from kvsize.sizing import SizingRequest, estimate\n"
    "estimate(load_model('llama3-70b'), load_gpu('h100-sxm'), SizingRequest(context_tokens=131072))\n"
)


def _commands(python: str, kvsize: str, baseline_path: str) -> dict[str, list[str]]:
    return {
        "python -c pass": [python, "-c", "pass"],
        "core: import, load 2 specs, estimate": [python, "-c", CORE_SCRIPT],
        "baseline: typer + rich one-row table": [python, baseline_path],
        "kvsize estimate (table)": [kvsize, "estimate", "--model", "llama3-70b", "--ctx", "128k"],
        "kvsize estimate --json": [kvsize, "estimate", "--model", "llama3-70b", "--ctx", "128k", "--json"],
        "kvsize check": [kvsize, "check", "--model", "llama3.1-70b", "--ctx", "128k", "--tp", "4"],
    }


def _time_with_python(commands: dict[str, list[str]], runs: int, folder: str) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in commands}
    environment = {**os.environ, "COLUMNS": "100"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": environment, "cwd": folder, "check": False}
    for name, argv in commands.items():  # one warm-up run each fills the OS page cache
        subprocess.run(argv, **quiet)
    for _ in range(runs):
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, **quiet)
            samples[name].append(time.perf_counter() - start)
    return samples


def _time_with_hyperfine(commands: dict[str, list[str]], runs: int, folder: str) -> dict[str, list[float]]:
    import shlex

    with tempfile.TemporaryDirectory() as folder:
        export = Path(folder) / "hyperfine.json"
        quoted = [" ".join(shlex.quote(part) for part in argv) for argv in commands.values()]
        subprocess.run(["hyperfine", "--warmup", "3", "--runs", str(runs), "--style", "none",
                        "--export-json", str(export), *quoted],
                       stdout=subprocess.DEVNULL, cwd=folder, check=True)  # fmt: skip
        results = json.loads(export.read_text())["results"]
    return {name: result["times"] for name, result in zip(commands, results)}


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    first, median, third = statistics.quantiles(values, n=4)
    return first, statistics.median(values), third


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per command (default 30)")
    parser.add_argument("--python-timer", action="store_true", help="use the Python timer even if hyperfine exists")
    arguments = parser.parse_args()

    kvsize = shutil.which("kvsize")
    if kvsize is None:
        print("error: kvsize is not on PATH; install it first (pip install .)", file=sys.stderr)
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as handle:
        handle.write(BASELINE_SCRIPT)
        baseline_path = handle.name

    commands = _commands(sys.executable, kvsize, baseline_path)
    use_hyperfine = shutil.which("hyperfine") is not None and not arguments.python_timer
    timer = "hyperfine" if use_hyperfine else "Python timer"
    # Every command runs in an empty folder: `python -c` puts the working
    # directory first on sys.path, and from the repository root it would import
    # the source tree (which reads YAML) instead of the installed wheel.
    with tempfile.TemporaryDirectory() as folder:
        samples = (_time_with_hyperfine if use_hyperfine else _time_with_python)(commands, arguments.runs, folder)
    os.unlink(baseline_path)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    baseline = medians["baseline: typer + rich one-row table"]
    print(f"{arguments.runs} runs per command, timed with {timer}; times in milliseconds")
    print(f"{'command':40} {'median':>8} {'q1':>8} {'q3':>8} {'vs baseline':>12}")
    for name, values in samples.items():
        first, median, third = _quartiles(values)
        print(f"{name:40} {median * 1e3:8.1f} {first * 1e3:8.1f} {third * 1e3:8.1f} {median / baseline:11.2f}x")

    core_extra_ms = (medians["core: import, load 2 specs, estimate"] - medians["python -c pass"]) * 1e3
    targets = [
        ("estimate (table) <= 1.25x baseline", medians["kvsize estimate (table)"] / baseline <= 1.25),
        ("check <= 1.25x baseline", medians["kvsize check"] / baseline <= 1.25),
        ("estimate --json <= 1.0x baseline", medians["kvsize estimate --json"] / baseline <= 1.0),
        (f"core adds <= 15 ms to python -c pass (measured {core_extra_ms:.1f} ms)", core_extra_ms <= 15),
    ]
    print()
    for label, met in targets:
        print(f"{'met ' if met else 'MISSED'}  {label}")
    return 0 if all(met for _, met in targets) else 1


if __name__ == "__main__":
    sys.exit(main())

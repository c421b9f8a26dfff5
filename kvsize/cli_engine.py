"""The `kvsize log` command and the `estimate --engine` output.

`kvsize log FILE` reads a serving engine's startup log, runs the same
configuration through kvsize's engine profile, and prints the figures the
engine printed next to kvsize's prediction. `estimate` calls
`print_engine_estimate` when `--engine` is given.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from kvsize.cli import _stdout_console, app
from kvsize.errors import InvalidInputError


def _read_log(file: str) -> str:
    if not file.strip():
        raise InvalidInputError("empty log file name; give a log file, or '-' to read stdin")
    if file == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise InvalidInputError("stdin is closed: pipe a startup log into 'kvsize log -'")
        text = sys.stdin.read()
        if not text.strip():
            raise InvalidInputError("empty log on stdin: pipe a startup log into 'kvsize log -'")
        return text
    from pathlib import Path

    path = Path(file)
    if path.is_dir():
        raise InvalidInputError(f"{file} is a folder; give a log file, or '-' to read stdin")
    if not path.is_file():
        raise InvalidInputError(f"log file not found: {file}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InvalidInputError(f"cannot read log file {file}: {error.strerror}") from None
    if not text.strip():
        raise InvalidInputError(f"empty log file: {file}")
    return text


@app.command("log")
def log_command(
    file: Annotated[str, typer.Argument(help="Startup log of vLLM, SGLang, TensorRT-LLM or llama.cpp; '-' reads stdin.")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model id, alias or spec file, for a log whose model is not in the catalog.")] = None,
    gpu: Annotated[Optional[str], typer.Option("--gpu", "-g", help="GPU id or alias. Needed to predict the available KV memory when the log does not print the GPU's total.")] = None,
    engine: Annotated[Optional[str], typer.Option("--engine", help="vllm, sglang, trtllm or llama.cpp, when the log's engine is not recognised.")] = None,
    output_format: Annotated[Optional[str], typer.Option("--format", "-f", help="Output format: table, json, csv or markdown.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Shortcut for --format json: every printed and predicted figure.")] = False,
) -> None:
    """Compare the KV-cache figures a serving engine printed at startup with kvsize's prediction."""
    from kvsize.catalog import load_gpu
    from kvsize.cli import DEFAULT_GPU
    from kvsize.engine_logs import compare_log, parse_log, resolve_log_model
    from kvsize.engines import parse_engine_name
    from kvsize.formats import resolve_format

    chosen_format = resolve_format(output_format, json_output)
    text = _read_log(file)
    facts = parse_log(text, parse_engine_name(engine) if engine else None)
    model_spec = resolve_log_model(facts, model)
    gpu_spec = load_gpu(DEFAULT_GPU if gpu is None else gpu)
    comparison = compare_log(facts, model_spec, gpu_spec, gpu_is_known=gpu is not None)

    for note in comparison.notes:
        print(f"note: {note}", file=sys.stderr)
    if chosen_format != "table":
        from kvsize.report_engine import render_log_comparison

        gpu_id = gpu_spec.id if gpu is not None else None
        print(render_log_comparison(comparison, model_spec.id, gpu_id, chosen_format), end="")
        return

    from kvsize.render_engine import log_table, log_title, print_titled_table

    if gpu is not None:
        gpu_name = gpu_spec.name
    elif facts.total_gpu_memory is not None:
        gpu_name = f"a GPU of {facts.total_gpu_memory.bytes / 2**30:.2f} GiB"
    else:
        gpu_name = "an unnamed GPU"
    title = log_title(comparison, model_spec.name, gpu_name)
    if comparison.rows:
        print_titled_table(_stdout_console(), title, log_table(comparison))
    else:
        print(title)
    if comparison.unchecked_reason is not None:
        print(f"no printed figure could be checked: {comparison.unchecked_reason}")
    else:
        print("agrees: token pools from the printed KV memory within one block plus the blocks hidden by its "
              "rounding; the available KV memory, and pools of a log that prints none, within 5%")  # fmt: skip

def print_engine_estimate(model_spec, gpu_spec, settings, weight_precision, output_format: str) -> None:  # type: ignore[no-untyped-def]
    """Run an engine profile for `kvsize estimate --engine` and print it in `output_format`."""
    from kvsize.engines import estimate_engine

    if settings.engine == "vllm":
        from kvsize.engines.vllm import check_scheduler_limits

        check_scheduler_limits(gpu_spec, settings)
    result = estimate_engine(model_spec, gpu_spec, settings, weight_precision)
    for warning in dict.fromkeys(result.base.warnings + result.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    if output_format != "table":
        from kvsize.report_engine import render_engine_estimate

        print(render_engine_estimate(result, output_format), end="")
        return
    from kvsize.render_engine import engine_table, engine_title, print_titled_table

    print_titled_table(_stdout_console(), engine_title(result), engine_table(result))

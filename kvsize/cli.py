"""The `kvsize` command line: parses options, calls the core, prints results.

Exit codes: 0 success, 1 the plan does not fit (gate commands only), 2 invalid
input (bad option, unknown model or GPU, invalid spec file). Every user error
is one line on stderr starting with `error:`; results go to stdout.
"""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from typing import Annotated, Optional

import typer

from kvsize.errors import InvalidInputError, KvsizeError

EXIT_OK = 0
EXIT_DOES_NOT_FIT = 1
EXIT_INVALID_INPUT = 2

DEFAULT_GPU = "h100-sxm"

app = typer.Typer(
    name="kvsize",
    help="Size the KV cache of an LLM and find the context and batch that fit on a GPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _parse_positive_int(text: str, option: str) -> int:
    cleaned = text.strip()
    if not cleaned.isascii() or not cleaned.isdigit():
        raise InvalidInputError(f"invalid value for {option}: {text!r}; expected a positive whole number")
    value = int(cleaned)
    if value < 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be at least 1")
    return value


def _parse_fraction(text: str, option: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; expected a number in (0, 1], e.g. 0.9") from None
    if not value.is_finite() or not 0 < value <= 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be greater than 0 and at most 1")
    return value


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


@app.command()
def estimate(
    model: Annotated[str, typer.Option("--model", "-m", help="Model id, alias or path to a model spec YAML.")],
    ctx: Annotated[str, typer.Option("--ctx", "--context", help="Context length per sequence in tokens: 131072, 128k (x1024), 1m (x1048576).")],
    gpu: Annotated[Optional[str], typer.Option("--gpu", "-g", help=f"GPU id or alias. Default: {DEFAULT_GPU}.")] = None,
    batch: Annotated[str, typer.Option("--batch", "-b", help="Concurrent sequences, each of --ctx tokens.")] = "1",
    kv_cache_dtype: Annotated[Optional[str], typer.Option("--kv-cache-dtype", "--kv-dtype", help="KV precision: fp32, fp16, bf16, fp8, int8, int4, nvfp4, mxfp4 or intN (N = 1..16). Default: the model's activation dtype.")] = None,
    kv_group_size: Annotated[Optional[str], typer.Option("--kv-group-size", help="Elements per quantization group; adds one fp16 scale per group.")] = None,
    kv_zero_point: Annotated[bool, typer.Option("--kv-zero-point", help="Also store one fp16 zero point per group (needs --kv-group-size).")] = False,
    weights_dtype: Annotated[Optional[str], typer.Option("--weights-dtype", help="Weight precision: fp32, fp16, bf16, fp8, int8, int4, mxfp4, nvfp4. Default: the published checkpoint's.")] = None,
    tensor_parallel_size: Annotated[str, typer.Option("--tensor-parallel-size", "--tp", "-tp", help="GPUs the model is split across (tensor parallelism).")] = "1",
    gpu_memory_utilization: Annotated[str, typer.Option("--gpu-memory-utilization", help="Fraction of each GPU's memory the server may use, in (0, 1].")] = "0.9",
    reserve: Annotated[Optional[str], typer.Option("--reserve", help="Memory per GPU held back for activations and the runtime, e.g. 2GiB. Default: 2GiB, an estimate.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object with raw byte counts.")] = False,
) -> None:
    """Estimate the KV cache for a model, context and batch, and what fits on a GPU."""
    from kvsize.catalog import load_gpu, load_model
    from kvsize.precision import parse_precision, parse_weight_precision
    from kvsize.sizing import DEFAULT_RESERVE_BYTES, SizingRequest
    from kvsize.sizing import estimate as run_estimate
    from kvsize.units import parse_byte_size, parse_token_count

    context_tokens = parse_token_count(ctx, "--ctx")
    batch_size = _parse_positive_int(batch, "--batch")
    tp = _parse_positive_int(tensor_parallel_size, "--tensor-parallel-size")
    utilization = _parse_fraction(gpu_memory_utilization, "--gpu-memory-utilization")
    group_size = _parse_positive_int(kv_group_size, "--kv-group-size") if kv_group_size is not None else None
    kv_precision = None
    if kv_cache_dtype is not None:
        kv_precision = parse_precision(kv_cache_dtype, group_size, kv_zero_point)
    elif group_size is not None or kv_zero_point:
        raise InvalidInputError("--kv-group-size and --kv-zero-point need --kv-cache-dtype (e.g. int4)")
    weight_precision = parse_weight_precision(weights_dtype) if weights_dtype is not None else None
    reserve_bytes = parse_byte_size(reserve, "--reserve") if reserve is not None else DEFAULT_RESERVE_BYTES

    model_spec = load_model(model)
    gpu_spec = load_gpu(gpu or DEFAULT_GPU)
    request = SizingRequest(
        context_tokens=context_tokens,
        batch_size=batch_size,
        kv_precision=kv_precision,
        weight_precision=weight_precision,
        tensor_parallel_size=tp,
        gpu_memory_utilization=utilization,
        reserve_bytes=reserve_bytes,
        reserve_is_default=reserve is None,
    )
    result = run_estimate(model_spec, gpu_spec, request)

    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if json_output:
        from kvsize.report import estimate_to_json

        print(estimate_to_json(result))
        return

    from kvsize.render import print_estimate
    from kvsize.sizing import smallest_fitting_tensor_parallel_size

    suggested_tp = None if result.fits else smallest_fitting_tensor_parallel_size(model_spec, gpu_spec, request)
    print_estimate(result, _stdout_console(), gpu_is_default=gpu is None, suggested_tp=suggested_tp)


@app.command()
def models() -> None:
    """List the built-in models with their KV bytes per token at the default dtype and max context in tokens."""
    from rich import box
    from rich.table import Table

    from kvsize.catalog import iter_specs
    from kvsize.precision import parse_precision
    from kvsize.sizing import bits_to_bytes, default_kv_dtype, kv_bits_per_token

    table = Table(box=box.SIMPLE, pad_edge=False)
    for column in ("id", "layers", "attention", "KV per token", "max context"):
        table.add_column(column, min_width=len(column), no_wrap=column != "attention",
                         justify="left" if column in ("id", "attention") else "right")  # fmt: skip
    for spec in iter_specs("models"):
        dtype = default_kv_dtype(spec)
        per_token = bits_to_bytes(kv_bits_per_token(spec, parse_precision(dtype)))
        table.add_row(spec.id, str(spec.num_layers), spec.attention_summary.replace("+", " + "), f"{per_token:,} B ({dtype})",
                      f"{spec.max_position_embeddings:,}")  # fmt: skip
    _stdout_console().print(table)


@app.command()
def gpus() -> None:
    """List the built-in GPUs with their memory as marketed and as the driver reports it."""
    from rich import box
    from rich.table import Table

    from kvsize.catalog import iter_specs
    from kvsize.units import format_bytes

    table = Table(box=box.SIMPLE, pad_edge=False)
    for column in ("id", "name", "marketed", "reported", "bandwidth"):
        table.add_column(column, no_wrap=column == "id")
    for spec in iter_specs("gpus"):
        reported = format_bytes(spec.memory_reported_bytes) + (" (estimate)" if spec.memory_reported_estimated else "")
        table.add_row(spec.id, spec.name, f"{spec.memory_marketed_gb:g} GB", reported,
                      f"{spec.memory_bandwidth_gb_per_s:,g} GB/s")  # fmt: skip
    _stdout_console().print(table)


@app.command()
def validate(
    files: Annotated[list[str], typer.Argument(help="Spec files to check; a file under a 'gpus' folder is read as a GPU spec.")],
) -> None:
    """Check model or GPU spec files and report every problem with its file and line."""
    from pathlib import Path

    from kvsize.catalog import load_spec_file

    failures = 0
    for name in files:
        kind = "gpus" if Path(name).resolve().parent.name == "gpus" else "models"
        try:
            spec = load_spec_file(kind, name)
        except KvsizeError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
        else:
            print(f"ok: {name} ({kind[:-1]} {spec.id})")
    if failures:
        raise typer.Exit(EXIT_INVALID_INPUT)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code, printing user errors as one line."""
    try:
        result = app(args=argv, prog_name="kvsize", standalone_mode=False)
    except KvsizeError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        _silence_broken_pipe()
        return EXIT_OK
    except Exception as error:
        # Typer's usage errors (Click's before Typer 0.22 vendored it) are matched
        # by shape, so that kvsize works across the Typer versions it allows.
        name = type(error).__name__
        if name.startswith("NoArgsIsHelp"):
            print(error.format_message())  # type: ignore[attr-defined]
            return EXIT_OK
        if hasattr(error, "format_message") and hasattr(error, "exit_code"):
            command = " ".join(part for part in ("kvsize", _command_name(argv)) if part)
            print(f"error: {error.format_message()} (see '{command} --help')", file=sys.stderr)
            return EXIT_INVALID_INPUT
        if name == "Abort":
            print("error: aborted", file=sys.stderr)
            return EXIT_INVALID_INPUT
        raise
    return result if isinstance(result, int) else EXIT_OK


def _command_name(argv: list[str] | None) -> str:
    arguments = sys.argv[1:] if argv is None else argv
    return next((part for part in arguments if not part.startswith("-")), "")


def _silence_broken_pipe() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())

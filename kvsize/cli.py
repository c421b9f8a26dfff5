"""The `kvsize` command line: parses options, calls the core, prints results.

Exit codes: 0 success, 1 the plan does not fit (gate commands only), 2 invalid
input (bad option, unknown model or GPU, invalid spec file). Every user error
is one line on stderr starting with `error:`; results go to stdout.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from kvsize.errors import KvsizeError

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
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from kvsize import __version__

        print(f"kvsize {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main_options(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Print the kvsize version and exit.")] = False,  # fmt: skip
) -> None:
    """Size the KV cache of an LLM and find the context and batch that fit on a GPU."""


# Options shared by several commands. Values are taken as strings and parsed
# by kvsize.options, so every invalid value gets kvsize's one-line error.
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model id, alias or path to a model spec YAML.")]
ContextOption = Annotated[str, typer.Option("--ctx", "--context", help="Context length per sequence in tokens: 131072, 128k (x1024), 1m (x1048576).")]
GpuOption = Annotated[Optional[str], typer.Option("--gpu", "-g", help=f"GPU id or alias. Default: {DEFAULT_GPU}.")]
BatchOption = Annotated[str, typer.Option("--batch", "-b", help="Concurrent sequences, each of --ctx tokens.")]
KvDtypeOption = Annotated[Optional[str], typer.Option("--kv-cache-dtype", "--kv-dtype", help="KV precision: fp32, fp16, bf16, fp8, int8, int4, nvfp4, mxfp4 or intN (N = 1..16). Default: the model's activation dtype.")]
KvGroupOption = Annotated[Optional[str], typer.Option("--kv-group-size", help="Elements per quantization group; adds one fp16 scale per group.")]
KvZeroPointOption = Annotated[bool, typer.Option("--kv-zero-point", help="Also store one fp16 zero point per group (needs --kv-group-size).")]
WeightsDtypeOption = Annotated[Optional[str], typer.Option("--weights-dtype", help="Weight precision: fp32, fp16, bf16, fp8, int8, int4, mxfp4, nvfp4. Default: the published checkpoint's.")]
TensorParallelOption = Annotated[str, typer.Option("--tensor-parallel-size", "--tp", "-tp", help="GPUs the model is split across (tensor parallelism).")]
UtilizationOption = Annotated[str, typer.Option("--gpu-memory-utilization", help="Fraction of each GPU's memory the server may use, in (0, 1].")]
ReserveOption = Annotated[Optional[str], typer.Option("--reserve", help="Memory per GPU held back for activations and the runtime, e.g. 2GiB. Default: 2GiB, an estimate.")]
FormatOption = Annotated[Optional[str], typer.Option("--format", "-f", help="Output format: table, json, csv or markdown.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Shortcut for --format json: raw byte counts, stable keys.")]


def _stdout_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False)


def print_warnings(warnings) -> None:
    """Print each warning as one line on stderr, once."""
    for warning in dict.fromkeys(warnings):
        print(f"warning: {warning}", file=sys.stderr)


@app.command()
def estimate(
    model: ModelOption,
    ctx: ContextOption,
    gpu: GpuOption = None,
    batch: BatchOption = "1",
    kv_cache_dtype: KvDtypeOption = None,
    kv_group_size: KvGroupOption = None,
    kv_zero_point: KvZeroPointOption = False,
    weights_dtype: WeightsDtypeOption = None,
    tensor_parallel_size: TensorParallelOption = "1",
    gpu_memory_utilization: UtilizationOption = "0.9",
    reserve: ReserveOption = None,
    output_format: FormatOption = None,
    json_output: JsonOption = False,
) -> None:
    """Estimate the KV cache for a model, context and batch, and what fits on a GPU."""
    from kvsize.catalog import load_gpu, load_model
    from kvsize.formats import resolve_format
    from kvsize.options import RequestOptions, build_request
    from kvsize.sizing import estimate as run_estimate

    chosen_format = resolve_format(output_format, json_output)
    request = build_request(
        RequestOptions(ctx, batch, kv_cache_dtype, kv_group_size, kv_zero_point, weights_dtype,
                       tensor_parallel_size, gpu_memory_utilization, reserve)  # fmt: skip
    )
    model_spec = load_model(model)
    gpu_spec = load_gpu(gpu or DEFAULT_GPU)
    result = run_estimate(model_spec, gpu_spec, request)
    print_warnings(result.warnings)

    if chosen_format != "table":
        from kvsize.report import render_estimate

        print(render_estimate(result, chosen_format), end="")
        return

    from kvsize.planning import alternatives
    from kvsize.render import print_estimate

    options = None if result.fits else alternatives(model_spec, gpu_spec, request, result)
    print_estimate(result, _stdout_console(), gpu_is_default=gpu is None, alternatives=options)


@app.command()
def validate(
    files: Annotated[list[str], typer.Argument(help="Spec files to check; a file under a 'gpus' folder is read as a GPU spec.")],
) -> None:
    """Check model or GPU spec files and report every problem with its file and line."""
    from pathlib import Path

    from kvsize.catalog import load_spec_file

    failures = 0
    for name in files:
        kind = _spec_kind(Path(name))
        try:
            spec = load_spec_file(kind, name)
        except KvsizeError as error:
            failures += 1
            print(f"error: {error}", file=sys.stderr)
        else:
            print(f"ok: {name} ({kind[:-1]} {spec.id})")
    if failures:
        raise typer.Exit(EXIT_INVALID_INPUT)


def _spec_kind(path) -> str:
    """Tell a GPU spec from a model spec by its folder, else by its GPU-only fields."""
    if path.resolve().parent.name in ("gpus", "models"):
        return path.resolve().parent.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "models"
    gpu_fields = ("memory_reported_bytes:", "memory_marketed_gb:", "memory_bandwidth_gb_per_s:", "vendor:")
    return "gpus" if any(line.startswith(gpu_fields) for line in text.splitlines()) else "models"


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
    except SystemExit:
        # Typer exits with 1 when the reader of stdout went away (`kvsize models | head -1`);
        # that is not a failed plan, so kvsize exits quietly with 0.
        if _stdout_is_closed():
            return EXIT_OK
        raise
    except Exception as error:
        # Usage errors are matched by shape rather than by class, because older
        # Typer versions raise Click's classes and newer ones their own copies.
        name = type(error).__name__
        if name.startswith("NoArgsIsHelp"):
            print(error.format_message())  # type: ignore[attr-defined]
            return EXIT_OK
        if hasattr(error, "format_message") and hasattr(error, "exit_code"):
            command = " ".join(part for part in ("kvsize", _command_name(argv)) if part)
            print(f"error: {error.format_message()} (see '{command} --help')", file=sys.stderr)
            return EXIT_INVALID_INPUT
        if name == "Exit" and hasattr(error, "exit_code"):
            return error.exit_code
        if name == "Abort":
            print("error: aborted", file=sys.stderr)
            return EXIT_INVALID_INPUT
        raise
    return result if isinstance(result, int) else EXIT_OK


def _stdout_is_closed() -> bool:
    # Typer swaps stdout for a wrapper that silences flushes once the reader is gone.
    return type(sys.stdout).__name__ == "PacifyFlushWrapper"


def _command_name(argv: list[str] | None) -> str:
    """Return the subcommand named on the command line, or "" when it is missing or unknown."""
    arguments = sys.argv[1:] if argv is None else argv
    name = next((part for part in arguments if not part.startswith("-")), "")
    known = {command.name or command.callback.__name__ for command in app.registered_commands}
    return name if name in known else ""


def _silence_broken_pipe() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


# Commands defined in other modules register themselves on `app` when imported.
from kvsize import cli_catalog, cli_plan  # noqa: E402,F401

"""The `kvsize` command line: parses options, calls the core, prints results.

Exit codes: 0 success, 1 the plan does not fit (gate commands only), 2 invalid
input (bad option, unknown model or GPU, invalid spec file). Every user error
is one line on stderr starting with `error:`; results go to stdout.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from kvsize.errors import InvalidInputError, KvsizeError

EXIT_OK = 0
EXIT_DOES_NOT_FIT = 1
EXIT_INVALID_INPUT = 2

DEFAULT_GPU = "h100-sxm"

def _new_app() -> typer.Typer:
    return typer.Typer(
        name="kvsize",
        help="Size the KV cache of an LLM and find the context and batch that fit on a GPU.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


app = _new_app()


def _print_version(value: bool) -> None:
    if value:
        from kvsize import __version__

        print(f"kvsize {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _main_options(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_print_version, is_eager=True,
                                          help="Print the kvsize version and exit.")] = False,  # fmt: skip
    config_dir: Annotated[Optional[list[str]], typer.Option("--config-dir", metavar="DIR", help="Folder of your own model and GPU specs (models/, gpus/), searched before KVSIZE_CONFIG_PATH, the user config folder and the built-in catalog. Repeatable.")] = None,
) -> None:
    """Size the KV cache of an LLM and find the context and batch that fit on a GPU."""
    from kvsize.user_specs import set_cli_config_dirs

    set_cli_config_dirs(config_dir or [])


# Options shared by several commands. Values are taken as strings and parsed
# by kvsize.options, so every invalid value gets kvsize's one-line error.
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model id or alias, a spec YAML, a Hugging Face config.json or model folder, a .gguf file, or hf:ORG/NAME.")]
ContextOption = Annotated[str, typer.Option("--ctx", "--context", help="Context length per sequence in tokens: 131072, 128k (x1024), 1m (x1048576).")]
GpuOption = Annotated[Optional[str], typer.Option("--gpu", "-g", help=f"GPU id or alias. Default: {DEFAULT_GPU}.")]
BatchOption = Annotated[str, typer.Option("--batch", "-b", help="Concurrent sequences, each of --ctx tokens.")]
KvDtypeOption = Annotated[Optional[str], typer.Option("--kv-cache-dtype", "--kv-dtype", help="KV precision: fp32, fp16, bf16, fp8, int8, int4, nvfp4, mxfp4 or intN (N = 1..16). With estimate --engine, the engine's own cache types, for llama.cpp f16, bf16, f32, q8_0, q4_0, q4_1, q5_0, q5_1 or iq4_nl. Default: the model's activation dtype.")]
KvGroupOption = Annotated[Optional[str], typer.Option("--kv-group-size", help="Elements per quantization group; adds one fp16 scale per group.")]
KvZeroPointOption = Annotated[bool, typer.Option("--kv-zero-point", help="Also store one fp16 zero point per group (needs --kv-group-size).")]
WeightsDtypeOption = Annotated[Optional[str], typer.Option("--weights-dtype", help="Weight precision: fp32, fp16, bf16, fp8, int8, int4, mxfp4, nvfp4. Default: the published checkpoint's.")]
TensorParallelOption = Annotated[str, typer.Option("--tensor-parallel-size", "--tp", "-tp", help="GPUs the model is split across (tensor parallelism).")]
UtilizationOption = Annotated[str, typer.Option("--gpu-memory-utilization", help="Fraction of each GPU's memory the server may use, in (0, 1].")]
ReserveOption = Annotated[Optional[str], typer.Option("--reserve", help="Memory per GPU held back for activations and the runtime, e.g. 2GiB. Default: 2GiB, an estimate.")]
FormatOption = Annotated[Optional[str], typer.Option("--format", "-f", help="Output format: table, json, csv or markdown.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Shortcut for --format json: raw byte counts, stable keys.")]

# What-if techniques, shared by estimate, compare, plan and check.
_TECHNIQUES = "What-if techniques"
KvQuantAxisOption = Annotated[str, typer.Option("--kv-quant-axis", rich_help_panel=_TECHNIQUES, help="Quantization groups along each token's vector (token) or along tokens per channel (channel, needs --kv-group-size).")]
KvOutlierOption = Annotated[Optional[str], typer.Option("--kv-outlier-fraction", rich_help_panel=_TECHNIQUES, help="Share of values kept at 16 bits as sparse outliers (KVQuant keeps about 0.01), each with a 16-bit index.")]
KvKeepRatioOption = Annotated[Optional[str], typer.Option("--kv-keep-ratio", rich_help_panel=_TECHNIQUES, help="Token eviction (H2O, SnapKV): keep this fraction of each sequence's tokens in layers that grow with context.")]
KvTokenBudgetOption = Annotated[Optional[str], typer.Option("--kv-token-budget", rich_help_panel=_TECHNIQUES, help="Token eviction: keep at most this many tokens per sequence per layer, e.g. 4k.")]
KvKeepRecentOption = Annotated[Optional[str], typer.Option("--kv-keep-recent", rich_help_panel=_TECHNIQUES, help="With eviction: also keep the last N prompt tokens uncompressed (SnapKV's observation window).")]
KvHeadsOption = Annotated[Optional[str], typer.Option("--kv-heads", rich_help_panel=_TECHNIQUES, help="What if every attention layer had N KV heads (1 = MQA)?")]
CrossLayerOption = Annotated[Optional[str], typer.Option("--cross-layer-share", rich_help_panel=_TECHNIQUES, help="Cross-layer attention: each cache serves K adjacent attention layers, ceil(layers / K) caches.")]
SlidingWindowOption = Annotated[Optional[str], typer.Option("--sliding-window", rich_help_panel=_TECHNIQUES, help="What if attention layers kept only the last W tokens?")]
SlidingLayersOption = Annotated[str, typer.Option("--sliding-window-layers", rich_help_panel=_TECHNIQUES, help="Apply --sliding-window to all attention layers or to alternate ones (even indices).")]
CpuOffloadOption = Annotated[Optional[str], typer.Option("--cpu-offload", rich_help_panel=_TECHNIQUES, help="Host memory for KV across the tensor-parallel group, e.g. 256GiB: trades latency for capacity.")]

# Serving-engine options of estimate, defined with their parser in kvsize.engine_options.
from kvsize.engine_options import (  # noqa: E402
    BlockSizeOption, DataParallelOption, DpAttentionOption, EnforceEagerOption, EngineOption, EngineVersionOption,
    FreeFractionOption, KvCacheMemoryOption, MaxBatchedTokensOption, MaxModelLenOption, MaxNumSeqsOption,
    MemFractionOption, PipelineParallelOption,
)  # fmt: skip


def technique_options(kv_quant_axis="token", kv_outlier_fraction=None, kv_keep_ratio=None, kv_token_budget=None,
                      kv_keep_recent=None, kv_heads=None, cross_layer_share=None, sliding_window=None,
                      sliding_window_layers="all", cpu_offload=None):  # fmt: skip
    """Collect the raw what-if option values of a command."""
    from kvsize.options import TechniqueOptions

    return TechniqueOptions(kv_quant_axis, kv_outlier_fraction, kv_keep_ratio, kv_token_budget, kv_keep_recent,
                            kv_heads, cross_layer_share, sliding_window, sliding_window_layers, cpu_offload)  # fmt: skip


def _stdout_console():
    import os

    from rich.console import Console

    # NO_COLOR (no-color.org) and TERM=dumb ask for plain text: Rich would drop
    # colours but keep bold and italics, so all styling is switched off.
    plain = bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"
    if plain:
        return Console(highlight=False, soft_wrap=False, color_system=None)
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
    gpu_memory_utilization: UtilizationOption = None,
    reserve: ReserveOption = None,
    output_format: FormatOption = None,
    json_output: JsonOption = False,
    kv_quant_axis: KvQuantAxisOption = "token",
    kv_outlier_fraction: KvOutlierOption = None,
    kv_keep_ratio: KvKeepRatioOption = None,
    kv_token_budget: KvTokenBudgetOption = None,
    kv_keep_recent: KvKeepRecentOption = None,
    kv_heads: KvHeadsOption = None,
    cross_layer_share: CrossLayerOption = None,
    sliding_window: SlidingWindowOption = None,
    sliding_window_layers: SlidingLayersOption = "all",
    cpu_offload: CpuOffloadOption = None,
    engine: EngineOption = None,
    engine_version: EngineVersionOption = None,
    max_model_len: MaxModelLenOption = None,
    max_num_batched_tokens: MaxBatchedTokensOption = None,
    max_num_seqs: MaxNumSeqsOption = None,
    block_size: BlockSizeOption = None,
    mem_fraction_static: MemFractionOption = None,
    free_gpu_memory_fraction: FreeFractionOption = None,
    pipeline_parallel_size: PipelineParallelOption = None,
    data_parallel_size: DataParallelOption = None,
    enable_dp_attention: DpAttentionOption = False,
    kv_cache_memory: KvCacheMemoryOption = None,
    enforce_eager: EnforceEagerOption = False,
) -> None:
    """Estimate the KV cache for a model, context and batch, and what fits on a GPU."""
    from kvsize.catalog import load_gpu, load_model
    from kvsize.engine_options import EngineFlags, reject_engine_options_without_engine
    from kvsize.formats import resolve_format
    from kvsize.options import RequestOptions, apply_architecture_options, build_request
    from kvsize.sizing import estimate as run_estimate

    chosen_format = resolve_format(output_format, json_output)
    flags = EngineFlags(engine, engine_version, max_model_len, max_num_batched_tokens, max_num_seqs, block_size,
                        mem_fraction_static, free_gpu_memory_fraction, pipeline_parallel_size,
                        data_parallel_size, enable_dp_attention, kv_cache_memory, enforce_eager)  # fmt: skip
    if engine is None:
        reject_engine_options_without_engine(flags)
    else:
        from kvsize.cli_engine import print_engine_estimate
        from kvsize.engine_options import engine_settings, reject_options_without_engine_meaning
        from kvsize.precision import parse_weight_precision

        reject_options_without_engine_meaning({
            "--kv-group-size": kv_group_size, "--kv-zero-point": kv_zero_point, "--reserve": reserve,
            "--kv-quant-axis": None if kv_quant_axis == "token" else kv_quant_axis,
            "--kv-outlier-fraction": kv_outlier_fraction, "--kv-keep-ratio": kv_keep_ratio,
            "--kv-token-budget": kv_token_budget, "--kv-keep-recent": kv_keep_recent, "--kv-heads": kv_heads,
            "--cross-layer-share": cross_layer_share, "--sliding-window": sliding_window, "--cpu-offload": cpu_offload,
        })  # fmt: skip

        settings = engine_settings(flags, ctx, batch, kv_cache_dtype, tensor_parallel_size, gpu_memory_utilization)
        weights = parse_weight_precision(weights_dtype) if weights_dtype is not None else None
        print_engine_estimate(load_model(model), load_gpu(DEFAULT_GPU if gpu is None else gpu), settings, weights, chosen_format)
        return
    techniques = technique_options(kv_quant_axis, kv_outlier_fraction, kv_keep_ratio, kv_token_budget, kv_keep_recent,
                                   kv_heads, cross_layer_share, sliding_window, sliding_window_layers, cpu_offload)  # fmt: skip
    request = build_request(
        RequestOptions(ctx, batch, kv_cache_dtype, kv_group_size, kv_zero_point, weights_dtype, tensor_parallel_size,
                       "0.9" if gpu_memory_utilization is None else gpu_memory_utilization, reserve, techniques)  # fmt: skip
    )
    model_spec = apply_architecture_options(load_model(model), techniques)
    gpu_spec = load_gpu(DEFAULT_GPU if gpu is None else gpu)
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
    files: Annotated[list[str], typer.Argument(help="Spec files or folders of them to check; a file under a 'gpus' folder is read as a GPU spec.")],
) -> None:
    """Check model or GPU spec files and report every problem with its file and line."""
    from kvsize.spec_check import check_spec_file, expand_spec_paths

    failures = 0
    for path in expand_spec_paths(files):
        kind = _spec_kind(path)
        problems, spec = check_spec_file(kind, path)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if spec is None:
            failures += 1
        else:
            print(f"ok: {path} ({kind[:-1]} {spec.id})")
    if failures:
        raise typer.Exit(EXIT_INVALID_INPUT)


def _spec_kind(path) -> str:
    """Tell a GPU spec from a model spec by its folder, else by its GPU-only fields."""
    try:
        folder = path.resolve().parent.name
        if folder in ("gpus", "models"):
            return folder
        if not path.is_file() or path.stat().st_size > 1024 * 1024:
            return "models"  # the loader then reports what is wrong with the path
        text = path.read_text(encoding="utf-8")
    except (OSError, RuntimeError, UnicodeDecodeError):
        return "models"
    gpu_fields = ("memory_reported_bytes:", "memory_marketed_gb:", "memory_bandwidth_gb_per_s:", "vendor:")
    return "gpus" if any(line.startswith(gpu_fields) for line in text.splitlines()) else "models"


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code, printing user errors as one line."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        import typer.main

        target = _app_for(arguments)
        # Built once here and run directly, as Typer's own __call__ would build it again.
        command = typer.main.get_command(target)
        _reject_repeated_options(command, target, arguments)
        result = command(args=arguments, prog_name="kvsize", standalone_mode=False)
    except KvsizeError as error:
        # One line, whatever a library put in the message.
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
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
    name = ""
    skip_value = False
    for part in arguments:
        if skip_value:
            skip_value = False
        elif part == "--config-dir":
            skip_value = True
        elif not part.startswith("-"):
            name = part
            break
    known = set(_COMMAND_MODULES) | {_registered_name(info) for info in app.registered_commands}
    return name if name in known else ""


def _registered_name(info) -> str:
    return info.name or info.callback.__name__.replace("_", "-")


def _app_for(arguments: list[str]) -> typer.Typer:
    """Return an app holding only the command being run, or the full app for help and errors.

    Typer builds every registered command, with its type hints, each time it
    runs; building one instead of all of them saves a third of kvsize's
    start-up. The top-level callback (--version, --config-dir) is kept.
    """
    name = _command_name(arguments)
    if not name:
        return load_all_commands()
    if name in _COMMAND_MODULES:
        import importlib

        importlib.import_module(_COMMAND_MODULES[name])
    single = _new_app()
    single.registered_callback = app.registered_callback
    single.registered_commands = [info for info in app.registered_commands if _registered_name(info) == name]
    return single


def _reject_repeated_options(group, target: typer.Typer, arguments: list[str]) -> None:
    """Reject a single-valued option given twice, which Typer would settle silently by keeping the last.

    `check --ctx 128k ... --ctx 8k` must not gate on 8k without a word.
    Options that take lists (compare's --model, --ctx, ...) and flags may repeat.
    """
    name = _command_name(arguments)
    if not name or target is app:
        return
    command = getattr(group, "commands", {}).get(name)
    if command is None:
        return
    canonical: dict[str, str] = {}
    for param in command.params:
        if getattr(param, "multiple", False) or getattr(param, "is_flag", False) or not hasattr(param, "opts"):
            continue
        for spelling in (*param.opts, *param.secondary_opts):
            canonical[spelling] = param.opts[0]
    seen: dict[str, str] = {}
    for part in arguments[arguments.index(name) + 1:]:
        if part == "--":
            break
        spelling = part.split("=", 1)[0]
        option = canonical.get(spelling)
        if option is None:
            continue
        if option in seen:
            spellings = f" (as {seen[option]} and {spelling})" if seen[option] != spelling else ""
            raise InvalidInputError(f"{option} was given more than once{spellings}; give it once")
        seen[option] = spelling


def _silence_broken_pipe() -> None:
    """Point stdout at /dev/null, so the interpreter's flush at exit has nowhere to fail."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


# Commands defined in other modules register themselves on `app` when their
# module is imported. Running one command imports only its module; help and
# unknown commands import them all (load_all_commands).
_COMMAND_MODULES = {
    "compare": "kvsize.cli_plan",
    "plan": "kvsize.cli_plan",
    "check": "kvsize.cli_plan",
    "curve": "kvsize.cli_plan",
    "models": "kvsize.cli_catalog",
    "gpus": "kvsize.cli_catalog",
    "show": "kvsize.cli_catalog",
    "import": "kvsize.cli_specs",
    "schema": "kvsize.cli_specs",
    "log": "kvsize.cli_engine",
}


def load_all_commands() -> typer.Typer:
    """Import every command module, so that `app` has every command, and return it."""
    import importlib

    for module in dict.fromkeys(_COMMAND_MODULES.values()):
        importlib.import_module(module)
    return app

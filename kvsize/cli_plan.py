"""Planning commands: `compare`, `plan`, `check` and `curve`.

Imported at the end of kvsize.cli, which registers the commands on its app.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Any, Optional

import typer

from kvsize.cli import (
    DEFAULT_GPU,
    CpuOffloadOption,
    CrossLayerOption,
    KvHeadsOption,
    KvKeepRatioOption,
    KvKeepRecentOption,
    KvOutlierOption,
    KvQuantAxisOption,
    KvTokenBudgetOption,
    SlidingLayersOption,
    SlidingWindowOption,
    technique_options,
    EXIT_DOES_NOT_FIT,
    EXIT_OK,
    BatchOption,
    ContextOption,
    FormatOption,
    GpuOption,
    JsonOption,
    KvDtypeOption,
    KvGroupOption,
    KvZeroPointOption,
    ModelOption,
    ReserveOption,
    TensorParallelOption,
    UtilizationOption,
    WeightsDtypeOption,
    _stdout_console,
    app,
    print_warnings,
)

ListOption = Optional[list[str]]


def _emit(text: str) -> None:
    sys.stdout.write(text)


@app.command()
def compare(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Model ids, comma-separated or repeated.")],
    ctx: Annotated[list[str], typer.Option("--ctx", "--context", help="Contexts in tokens, comma-separated or repeated: 32k,128k.")],
    gpu: Annotated[ListOption, typer.Option("--gpu", "-g", help=f"GPU ids, comma-separated or repeated. Default: {DEFAULT_GPU}.")] = None,
    batch: Annotated[ListOption, typer.Option("--batch", "-b", help="Batch sizes, comma-separated or repeated. Default: 1.")] = None,
    kv_cache_dtype: Annotated[ListOption, typer.Option("--kv-cache-dtype", "--kv-dtype", help="KV precisions, comma-separated or repeated. Default: each model's activation dtype.")] = None,
    kv_group_size: KvGroupOption = None,
    kv_zero_point: KvZeroPointOption = False,
    weights_dtype: Annotated[ListOption, typer.Option("--weights-dtype", help="Weight precisions, comma-separated or repeated. Default: each checkpoint's.")] = None,
    tensor_parallel_size: Annotated[ListOption, typer.Option("--tensor-parallel-size", "--tp", "-tp", help="Tensor-parallel sizes, comma-separated or repeated. Default: 1.")] = None,
    gpu_memory_utilization: UtilizationOption = "0.9",
    reserve: ReserveOption = None,
    sort: Annotated[Optional[str], typer.Option("--sort", help="Sort rows by a JSON key, e.g. max_batch_size; prefix '-' for descending (--sort=-max_batch_size).")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Row to compare KV against: a row number (1 = first) or a model id; adds a 'vs baseline' column.")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="Comma-separated JSON keys to show, e.g. model,gpu,kv_cache_bytes,fits.")] = None,
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
) -> None:
    """Compare models, GPUs, contexts and precisions side by side: one row per combination."""
    from kvsize.catalog import load_gpu, load_model
    from kvsize.formats import Column, resolve_format, select_columns, sort_rows, to_csv, to_json, to_markdown
    from kvsize.options import split_values
    from kvsize.options import (
        RequestOptions,
        apply_architecture_options,
        build_request,
        parse_kv_precision,
        parse_positive_int,
    )
    from kvsize.planning import compare as run_compare
    from kvsize.precision import parse_weight_precision
    from kvsize.report import COMPARE_COLUMN_SPECS, SCHEMA_VERSION, estimate_to_dict, flat_keys
    from kvsize.units import parse_token_count

    chosen_format = resolve_format(output_format, json_output)
    techniques = technique_options(kv_quant_axis, kv_outlier_fraction, kv_keep_ratio, kv_token_budget, kv_keep_recent,
                                   kv_heads, cross_layer_share, sliding_window, sliding_window_layers, cpu_offload)  # fmt: skip
    contexts = [parse_token_count(value, "--ctx") for value in split_values(ctx, "--ctx")]
    batches = [parse_positive_int(value, "--batch") for value in split_values(batch, "--batch")] or [1]
    tp_sizes = [parse_positive_int(value, "--tensor-parallel-size")
                for value in split_values(tensor_parallel_size, "--tensor-parallel-size")] or [1]  # fmt: skip
    kv_precisions = [_compared_kv_precision(value, kv_group_size, kv_zero_point, techniques)
                     for value in split_values(kv_cache_dtype, "--kv-cache-dtype")] or [
                         parse_kv_precision(None, kv_group_size, kv_zero_point, techniques)]  # fmt: skip
    weight_precisions = [parse_weight_precision(value) for value in split_values(weights_dtype, "--weights-dtype")] or [None]
    base = build_request(RequestOptions(ctx="1", gpu_memory_utilization=gpu_memory_utilization, reserve=reserve,
                                        techniques=dataclasses.replace(techniques, kv_outlier_fraction=None,
                                                                       kv_quant_axis="token")))  # fmt: skip
    models = [apply_architecture_options(load_model(name), techniques) for name in split_values(model, "--model")]
    gpus = [load_gpu(name) for name in split_values(gpu, "--gpu")] or [load_gpu(DEFAULT_GPU)]

    skipped: list[str] = []
    results = run_compare(models, gpus, base, contexts, batches, kv_precisions, weight_precisions, tp_sizes, skipped)
    print_warnings([*skipped, *(warning for result in results for warning in result.warnings)])
    rows = [estimate_to_dict(result) for result in results]

    valid_keys = flat_keys(rows[0])
    rows = sort_rows(rows, sort, valid_keys)
    ratios = _baseline_ratios(rows, baseline, models) if baseline is not None else None

    if chosen_format == "json":
        document: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "rows": rows}
        if ratios is not None:
            document["kv_ratio_to_baseline"] = ratios
        _emit(to_json(document) + "\n")
        return

    available = [Column(key, header) for key, header in COMPARE_COLUMN_SPECS]
    chosen = select_columns(available, split_values([columns], "--columns") if columns is not None else None, valid_keys)
    if ratios is not None:
        for row, ratio in zip(rows, ratios):
            row["kv_ratio_to_baseline"] = ratio
        chosen.append(Column("kv_ratio_to_baseline", "vs baseline", _ratio_text))

    if chosen_format == "csv":
        _emit(to_csv(rows, chosen))
    elif chosen_format == "markdown":
        _emit(to_markdown(rows, chosen))
    else:
        from kvsize.render import print_rows, split_constant_columns

        failing = sum(not row["fits"] for row in rows)
        noun = "combination" if len(rows) == 1 else "combinations"
        if failing:
            title = f"{len(rows)} {noun}, {failing} {'does' if failing == 1 else 'do'} not fit (marked NO)"
        else:
            title = f"{len(rows)} {noun}, {'it fits' if len(rows) == 1 else 'all fit'}"
        applied = list(dict.fromkeys(technique for row in rows for technique in row["techniques"]))
        if applied:
            title += "; techniques: " + "; ".join(applied)
        if columns is None:
            chosen, common = split_constant_columns(chosen, rows, _DIMENSION_KEYS)
            title += f"; every row: {common}" if common else ""
        print_rows(_stdout_console(), chosen, rows, title, failed=lambda row: not row["fits"])


def _compared_kv_precision(dtype: str, group_size, zero_point: bool, techniques):
    """Parse one compared KV dtype; quantization options apply only to the quantized ones.

    `--kv-cache-dtype bf16,fp8,int4 --kv-group-size 32` compares bf16 as it is
    beside grouped fp8 and int4, since a 16-bit cache has no scales.
    """
    from kvsize.options import parse_kv_precision
    from kvsize.precision import canonical_dtype_name

    if canonical_dtype_name(dtype) in ("fp32", "fp16", "bf16"):
        return parse_kv_precision(dtype, None, False, None)
    return parse_kv_precision(dtype, group_size, zero_point, techniques)


_DIMENSION_KEYS = ("model", "gpu", "tensor_parallel_size", "context_tokens", "batch_size", "kv_cache_dtype", "weights_dtype")


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _baseline_ratios(rows: list[dict[str, Any]], baseline: str, models) -> list[float | None]:
    """Return each row's KV cache divided by the baseline row's."""
    from kvsize.catalog import resolve_id
    from kvsize.errors import InvalidInputError

    text = baseline.strip()
    if text.isascii() and text.isdigit():
        index = int(text) - 1
        if not 0 <= index < len(rows):
            raise InvalidInputError(f"invalid value for --baseline: row {text} does not exist; give 1 to {len(rows)}")
    else:
        model_ids = {spec.id for spec in models}
        wanted = text if text in model_ids else resolve_id("models", text)
        matches = [position for position, row in enumerate(rows) if row["model"] == wanted]
        if not matches:
            raise InvalidInputError(f"invalid value for --baseline: {baseline!r} is not one of the compared models; "
                                    "add it with --model or give a row number")  # fmt: skip
        index = matches[0]
    reference = rows[index]["kv_cache_bytes"]
    return [row["kv_cache_bytes"] / reference if reference else None for row in rows]


@app.command()
def plan(
    model: ModelOption,
    ctx: ContextOption,
    batch: BatchOption = "1",
    gpu: Annotated[ListOption, typer.Option("--gpu", "-g", help="Candidate GPU ids, comma-separated or repeated. Default: every GPU in the catalog.")] = None,
    kv_cache_dtype: KvDtypeOption = None,
    kv_group_size: KvGroupOption = None,
    kv_zero_point: KvZeroPointOption = False,
    weights_dtype: WeightsDtypeOption = None,
    gpu_memory_utilization: UtilizationOption = "0.9",
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
) -> None:
    """Find, for each GPU type, the smallest tensor-parallel group that fits the weights and the requested KV."""
    from kvsize.catalog import catalog_with_user_specs, load_gpu, load_model
    from kvsize.formats import Column, resolve_format, to_csv, to_json, to_markdown
    from kvsize.options import split_values
    from kvsize.options import RequestOptions, apply_architecture_options, build_request
    from kvsize.planning import plan as run_plan
    from kvsize.report import SCHEMA_VERSION, estimate_to_dict

    chosen_format = resolve_format(output_format, json_output)
    techniques = technique_options(kv_quant_axis, kv_outlier_fraction, kv_keep_ratio, kv_token_budget, kv_keep_recent,
                                   kv_heads, cross_layer_share, sliding_window, sliding_window_layers, cpu_offload)  # fmt: skip
    request = build_request(RequestOptions(ctx, batch, kv_cache_dtype, kv_group_size, kv_zero_point, weights_dtype,
                                           "1", gpu_memory_utilization, reserve, techniques))  # fmt: skip
    model_spec = apply_architecture_options(load_model(model), techniques)
    if gpu is None:
        candidates, warnings = catalog_with_user_specs("gpus")
        print_warnings(warnings)
    else:
        loaded = [load_gpu(name) for name in split_values(gpu, "--gpu")]
        candidates = list({spec.id: spec for spec in reversed(loaded)}.values())[::-1]  # each GPU once, first order
    options = run_plan(model_spec, candidates, request)

    rows = []
    for option in options:
        detail = estimate_to_dict(option.estimate) if option.estimate is not None else None
        rows.append({
            "gpu": option.gpu.id,
            "fits": option.fits,
            "num_gpus": option.num_gpus,
            "tensor_parallel_size": detail["tensor_parallel_size"] if detail else None,
            "total_memory_bytes": option.total_memory_bytes,
            "weights_bytes_per_gpu": detail["weights_bytes_per_gpu"] if detail else None,
            "kv_cache_bytes_per_gpu": detail["kv_cache_bytes_per_gpu"] if detail else None,
            "kv_budget_bytes_per_gpu": detail["kv_budget_bytes_per_gpu"] if detail else None,
            "max_batch_size": detail["max_batch_size"] if detail else None,
            "reason": option.reason,
            "estimate": detail,
        })  # fmt: skip

    if chosen_format == "json":
        _emit(to_json({"schema_version": SCHEMA_VERSION, "model": model_spec.id,
                       "context_tokens": request.context_tokens, "batch_size": request.batch_size,
                       "options": rows}) + "\n")  # fmt: skip
        return

    columns = [
        Column("gpu", "GPU"),
        Column("num_gpus", "GPUs", lambda value: "-" if value is None else str(value)),
        Column("total_memory_bytes", "total memory"),
        Column("weights_bytes_per_gpu", "weights/GPU"),
        Column("kv_cache_bytes_per_gpu", "KV/GPU"),
        Column("kv_budget_bytes_per_gpu", "budget/GPU"),
        Column("max_batch_size", "max batch"),
        Column("reason", "why not", lambda value: value or ""),
    ]
    if chosen_format == "csv":
        _emit(to_csv(rows, [Column("fits", "fits"), Column("tensor_parallel_size", "tp"), *columns]))
    elif chosen_format == "markdown":
        _emit(to_markdown(rows, columns))
    else:
        from kvsize.render import print_rows

        plural = "s" if request.batch_size != 1 else ""
        title = (f"{model_spec.name}: {request.context_tokens:,} tokens x {request.batch_size:,} sequence{plural}; "
                 "smallest tensor-parallel group per GPU, fewest GPUs first")  # fmt: skip
        print_rows(_stdout_console(), columns, rows, title, failed=lambda row: not row["fits"])


@app.command()
def check(
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
    min_batch: Annotated[Optional[str], typer.Option("--min-batch", help="Fail unless at least this many sequences of --ctx tokens fit.")] = None,
    min_context: Annotated[Optional[str], typer.Option("--min-context", help="Fail unless each of --batch sequences can reach this many tokens, e.g. 64k.")] = None,
    max_kv_fraction: Annotated[Optional[str], typer.Option("--max-kv-fraction", help="Fail if the request's KV uses more than this fraction of the KV budget per GPU, in (0, 1].")] = None,
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
) -> None:
    """Gate a deployment plan in CI: exit 0 when it fits and every threshold holds, 1 when not, 2 on invalid input."""
    from kvsize.catalog import load_gpu, load_model
    from kvsize.formats import resolve_format, to_json
    from kvsize.options import RequestOptions, apply_architecture_options, build_request, parse_fraction, parse_positive_int
    from kvsize.planning import Thresholds
    from kvsize.planning import check as run_check
    from kvsize.report import estimate_to_dict
    from kvsize.sizing import estimate as run_estimate
    from kvsize.units import format_bytes, parse_token_count

    chosen_format = resolve_format(output_format, json_output)
    techniques = technique_options(kv_quant_axis, kv_outlier_fraction, kv_keep_ratio, kv_token_budget, kv_keep_recent,
                                   kv_heads, cross_layer_share, sliding_window, sliding_window_layers, cpu_offload)  # fmt: skip
    request = build_request(RequestOptions(ctx, batch, kv_cache_dtype, kv_group_size, kv_zero_point, weights_dtype,
                                           tensor_parallel_size, gpu_memory_utilization, reserve, techniques))  # fmt: skip
    thresholds = Thresholds(
        min_batch_size=parse_positive_int(min_batch, "--min-batch") if min_batch is not None else None,
        min_context_tokens=parse_token_count(min_context, "--min-context") if min_context is not None else None,
        max_kv_fraction=float(parse_fraction(max_kv_fraction, "--max-kv-fraction")) if max_kv_fraction is not None else None,
    )
    model_spec = apply_architecture_options(load_model(model), techniques)
    result = run_estimate(model_spec, load_gpu(DEFAULT_GPU if gpu is None else gpu), request)
    print_warnings(result.warnings)
    verdict = run_check(result, thresholds)

    if chosen_format in ("csv", "markdown"):
        from kvsize.report import render_estimate

        _emit(render_estimate(result, chosen_format))
    elif chosen_format == "json":
        document = estimate_to_dict(result)
        document["passed"] = verdict.passed
        document["failures"] = list(verdict.failures)
        document["kv_fraction_of_budget"] = verdict.kv_fraction
        _emit(to_json(document) + "\n")
    else:
        where = f"{result.model.id} on {request.tensor_parallel_size} x {result.gpu.id}"
        shape = f"{request.context_tokens:,} tokens x {request.batch_size:,}"
        if verdict.passed:
            used = f", {verdict.kv_fraction:.0%} of budget" if verdict.kv_fraction is not None else ""
            print(f"PASS {where}: {shape} fits (KV {format_bytes(result.kv_cache_bytes_per_gpu)} of "
                  f"{format_bytes(result.kv_budget_bytes_per_gpu)} per GPU{used}), max batch {result.max_batch_size:,}")  # fmt: skip
        else:
            print(f"FAIL {where}: {shape}: " + "; ".join(verdict.failures))
    raise typer.Exit(EXIT_OK if verdict.passed else EXIT_DOES_NOT_FIT)


@app.command()
def curve(
    model: Annotated[list[str], typer.Option("--model", "-m", help="Model ids, comma-separated or repeated.")],
    gpu: GpuOption = None,
    batch: BatchOption = "1",
    kv_cache_dtype: KvDtypeOption = None,
    weights_dtype: WeightsDtypeOption = None,
    tensor_parallel_size: TensorParallelOption = "1",
    gpu_memory_utilization: UtilizationOption = "0.9",
    reserve: ReserveOption = None,
    max_ctx: Annotated[Optional[str], typer.Option("--max-ctx", help="Right end of the context axis. Default: the largest model limit.")] = None,
    output_format: FormatOption = None,
    json_output: JsonOption = False,
) -> None:
    """Draw memory per GPU (weights plus KV) against context for each model, with the GPU's usable memory as a line."""
    from kvsize.catalog import load_gpu, load_model
    from kvsize.curve import curve_points, draw_chart
    from kvsize.formats import Column, resolve_format, to_csv, to_json, to_markdown
    from kvsize.options import split_values
    from kvsize.options import RequestOptions, build_request
    from kvsize.report import SCHEMA_VERSION
    from kvsize.units import parse_token_count

    chosen_format = resolve_format(output_format, json_output)
    request = build_request(RequestOptions("1", batch, kv_cache_dtype, None, False, weights_dtype,
                                           tensor_parallel_size, gpu_memory_utilization, reserve))  # fmt: skip
    models = [load_model(name) for name in split_values(model, "--model")]
    gpu_spec = load_gpu(DEFAULT_GPU if gpu is None else gpu)
    limit = parse_token_count(max_ctx, "--max-ctx") if max_ctx is not None else None
    if limit is not None:
        print_warnings(f"{spec.id} is drawn past its max_position_embeddings ({spec.max_position_embeddings:,} tokens) "
                       "to --max-ctx; the model was not trained for that" for spec in models
                       if spec.max_position_embeddings < limit)  # fmt: skip
    series = curve_points(models, gpu_spec, request, limit)

    rows = [{"model": item.model_id, "context_tokens": context, "memory_bytes_per_gpu": memory,
             "usable_memory_bytes_per_gpu": item.usable_bytes, "fits": memory <= item.usable_bytes}
            for item in series for context, memory in item.points]  # fmt: skip
    columns = [Column("model", "model"), Column("context_tokens", "context"),
               Column("memory_bytes_per_gpu", "weights + reserve + KV per GPU"), Column("fits", "fits")]  # fmt: skip
    if chosen_format == "json":
        _emit(to_json({"schema_version": SCHEMA_VERSION, "gpu": gpu_spec.id, "points": rows}) + "\n")
    elif chosen_format == "csv":
        _emit(to_csv(rows, columns))
    elif chosen_format == "markdown":
        _emit(to_markdown(rows, columns))
    else:
        console = _stdout_console()
        if console.is_terminal:
            console.print(draw_chart(series, gpu_spec, width=min(console.width, 120)), markup=False, highlight=False)
        else:
            from kvsize.render import print_rows

            print_rows(console, columns, rows, "memory per GPU against context (not a terminal: table)",
                       failed=lambda row: not row["fits"])

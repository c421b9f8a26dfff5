"""Human-readable output: Rich tables built from core results.

Rich is imported here and nowhere in the core, so library users and the JSON
paths do not pay for it. Every number carries its unit.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from kvsize.sizing import Estimate
from kvsize.units import format_bytes

_KIND_LABELS = {
    "full": "full attention",
    "sliding": "sliding window",
    "chunked": "chunked local",
    "mla": "MLA latent",
    "state": "recurrent state",
    "shared": "shared KV",
}


def _bytes_with_raw(num_bytes: int) -> str:
    return f"{format_bytes(num_bytes)} ({num_bytes:,} bytes)"


def _params(count: int) -> str:
    return f"{count / 1e9:.2f}B params" if count >= 10**9 else f"{count / 1e6:.0f}M params"


def _fit_verdict(result: Estimate) -> str:
    if result.fits:
        headroom = result.kv_budget_bytes_per_gpu - result.kv_cache_bytes_per_gpu
        if headroom < 0:
            return f"yes, with {format_bytes(-headroom)} per GPU of the KV in host memory"
        return f"yes, {format_bytes(headroom)} per GPU to spare"
    if not result.weights_fit:
        return f"no: weights and reserve exceed usable memory by {format_bytes(-result.kv_budget_bytes_per_gpu)} per GPU"
    shortfall = result.kv_cache_bytes_per_gpu - result.kv_budget_bytes_per_gpu - result.request.cpu_offload_bytes // result.num_gpus
    where = "the budget and its host memory" if result.request.cpu_offload_bytes else "the budget"
    return f"no: the KV cache exceeds {where} by {format_bytes(shortfall)} per GPU"


def _breakdown_rows(result: Estimate) -> list[tuple[str, str]]:
    rows = []
    for usage in result.breakdown:
        label = f"  {_KIND_LABELS[usage.kind]}, {usage.num_layers} layers"
        if usage.kind == "state":
            value = f"{format_bytes(usage.state_bytes_per_sequence_per_gpu)} per sequence per GPU, fixed"
        elif usage.kind == "shared":
            value = "0 bytes: each reads the cache of an earlier layer"
        else:
            value = (
                f"{format_bytes(usage.bytes_per_token)}/token, "
                f"{usage.cached_tokens_per_layer:,} tokens per layer, "
                f"{format_bytes(usage.kv_cache_bytes_per_gpu)} per GPU"
            )
        rows.append((label, value))
    return rows


def estimate_table(result: Estimate, gpu_is_default: bool = False, alternatives: list[str] | None = None) -> Table:
    """Build the table that `kvsize estimate` prints."""
    request = result.request
    model, gpu = result.model, result.gpu
    tp = request.tensor_parallel_size
    gpu_note = " (default GPU)" if gpu_is_default else ""
    title = (
        f"{model.name} on {tp} x {gpu.name}{gpu_note}\n"
        f"{request.context_tokens:,} tokens x {request.batch_size:,} sequence{'s' if request.batch_size != 1 else ''}, "
        f"KV cache {result.kv_precision.describe()}, weights {result.weight_precision.name}"
    )
    table = Table(title=title, box=box.SIMPLE, show_header=False, title_justify="left", pad_edge=False)
    # The label column may wrap, so a narrow terminal still leaves room for the values.
    table.add_column("quantity", style="bold", min_width=8, max_width=28)
    table.add_column("value", min_width=16, overflow="fold")

    for technique in result.techniques:
        table.add_row("Technique", technique)
    table.add_row("KV per token", _bytes_with_raw(result.kv_bytes_per_token))
    if result.kv_precision.group_size is not None or result.kv_precision.outlier_fraction:
        table.add_row("Effective KV bits", f"{result.kv_effective_bits:.3f} bits per element, every overhead included")
    for label, value in _breakdown_rows(result):
        table.add_row(label, value)
    if tp > 1:
        table.add_row("KV per token per GPU", _bytes_with_raw(result.kv_bytes_per_token_per_gpu))
    table.add_row(
        "KV cache for request",
        f"{_bytes_with_raw(result.kv_cache_bytes_per_gpu)} per GPU, {format_bytes(result.kv_cache_bytes)} total",
    )

    weights_origin = "checkpoint size" if result.weights_from_checkpoint else (
        f"{_params(model.params_total)} x {result.weight_precision.describe()}"
        + ("" if model.params_exact else ", parameter count not exact: estimate")
    )
    table.add_row("Weights", f"{format_bytes(result.weights_bytes_per_gpu)} per GPU ({weights_origin})")

    capacity_note = " (estimate)" if gpu.memory_reported_estimated else ""
    table.add_row(
        "Usable memory",
        f"{format_bytes(result.gpu_memory_bytes)}{capacity_note} x {request.gpu_memory_utilization} = "
        f"{format_bytes(result.usable_memory_bytes)} per GPU",
    )
    reserve_note = " (default estimate; set --reserve)" if request.reserve_is_default else ""
    table.add_row("Reserve", f"{format_bytes(request.reserve_bytes)} per GPU{reserve_note}")
    table.add_row(
        "KV budget",
        f"{format_bytes(result.kv_budget_bytes_per_gpu)} per GPU = usable - weights - reserve",
    )
    if request.cpu_offload_bytes:
        table.add_row("CPU offload", f"{format_bytes(request.cpu_offload_bytes)} of host memory, "
                      f"{format_bytes(request.cpu_offload_bytes // tp)} per GPU")  # fmt: skip
        table.add_row("KV placement", f"{format_bytes(result.kv_on_gpu_bytes_per_gpu)} per GPU on the GPU, "
                      f"{format_bytes(result.kv_on_host_bytes)} in host memory; per sequence "
                      f"{result.gpu_tokens_per_sequence:,} tokens on the GPU, {result.host_tokens_per_sequence:,} on the host")  # fmt: skip
    table.add_row("Fits", _fit_verdict(result))

    if result.max_context_tokens is None:
        bounded = all(layer.max_cached_tokens() is not None for layer in model.layer_types.values())
        if bounded or (request.token_policy is not None and request.token_policy.token_budget is not None):
            max_context = "unbounded: no layer's cache grows past a fixed size"
        else:
            max_context = "more than 1,099,511,627,776 tokens (2^40, the longest context kvsize sizes)"
    else:
        max_context = f"{result.max_context_tokens:,} tokens"
        if request.batch_size > 1:
            max_context += f" per sequence at batch {request.batch_size:,}"
        if result.max_context_tokens > model.max_position_embeddings:
            max_context += f" (model limit {model.max_position_embeddings:,})"
    table.add_row("Max context", max_context)
    plural = "" if result.max_batch_size == 1 else "s"
    table.add_row("Max batch", f"{result.max_batch_size:,} sequence{plural} at {request.context_tokens:,} tokens")
    if request.cpu_offload_bytes:
        gpu_only = ("unbounded" if result.max_context_tokens_gpu_only is None
                    else f"{result.max_context_tokens_gpu_only:,} tokens")  # fmt: skip
        table.add_row("Without offload", f"max context {gpu_only}, max batch {result.max_batch_size_gpu_only:,}; "
                      "the host tier adds the difference, at the cost of latency")  # fmt: skip

    if not result.fits:
        table.add_row("Suggestion", _suggestion(alternatives or []))
    return table


def _suggestion(alternatives: list[str]) -> str:
    if not alternatives:
        return "no single option change fits; run 'kvsize plan' to search GPU types and counts"
    if len(alternatives) == 1:
        return f"this fits: {alternatives[0]}"
    return "each of these fits on its own: " + ", ".join(alternatives)


def print_estimate(result: Estimate, console: Console, gpu_is_default: bool = False,
                   alternatives: list[str] | None = None) -> None:  # fmt: skip
    """Print the estimate table to `console`."""
    print_table(console, estimate_table(result, gpu_is_default, alternatives))


def rows_table(columns, rows, title: str | None = None, failed=None) -> Table:
    """Build a Rich table of `rows` (JSON-keyed mappings) with one column per `Column`.

    Rows for which `failed(row)` is true are styled, never dropped.
    """
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for column in columns:
        numeric = column.key.endswith(("_bytes", "_per_gpu", "_tokens", "_size", "_token")) or column.key in (
            "tensor_parallel_size", "batch_size", "num_gpus",
        )  # fmt: skip
        table.add_column(column.header, justify="right" if numeric else "left", no_wrap=column.key != "reason")
    for row in rows:
        style = "red" if failed is not None and failed(row) else None
        table.add_row(*(column.cell(row) for column in columns), style=style)
    return table


def print_table(console: Console, table: Table) -> None:
    """Print a table; off a terminal, at its natural width, so no cell is cut or wrapped."""
    if console.is_terminal:
        console.print(table)
        return
    # Rendered once on a wide canvas (a table never grows past its natural
    # width), then stripped of the padding Rich adds to every cell.
    console.width = 10_000
    with console.capture() as capture:
        console.print(table)
    console.file.write("\n".join(line.rstrip() for line in capture.get().splitlines()) + "\n")


def print_rows(console: Console, columns, rows, title: str | None = None, failed=None) -> None:
    """Print rows as a table, or, on a terminal too narrow for the table, as one block per row.

    A table squeezed below its natural width would cut or scatter its values;
    a block of `header  value` lines per row stays readable at any width.
    """
    table = rows_table(columns, rows, title, failed)
    natural = console.measure(table, options=console.options.update_width(100_000)).maximum
    if not console.is_terminal or natural <= console.width:
        print_table(console, table)
        return
    if title:
        console.print(title, markup=False, highlight=False)
    label_width = max(len(column.header) for column in columns)
    for number, row in enumerate(rows, start=1):
        style = "red" if failed is not None and failed(row) else None
        console.print(f"[{number}]", style=style, markup=False, highlight=False)
        for column in columns:
            console.print(f"  {column.header:<{label_width}}  {column.cell(row)}", markup=False, highlight=False)


def split_constant_columns(columns, rows, keys):
    """Move columns among `keys` whose value is the same in every row into a title note.

    Returns the remaining columns and a note such as `TP 8, batch 1`; with a
    single row nothing moves.
    """
    if len(rows) < 2:
        return list(columns), ""
    kept, notes = [], []
    for column in columns:
        values = {repr(row.get(column.key)) for row in rows}
        if column.key in keys and len(values) == 1:
            notes.append(f"{column.header} {column.cell(rows[0])}")
        else:
            kept.append(column)
    return kept, ", ".join(notes)

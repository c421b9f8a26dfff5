"""Memory against context, as data points and as a text chart for the terminal.

The x axis is logarithmic (each column a constant factor of context), since
contexts span 1k to millions of tokens; the y axis is linear in GiB.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

from kvsize.sizing import SizingRequest, estimate, sequence_kv_bytes
from kvsize.specs import GpuSpec, ModelSpec
from kvsize.units import GiB

MIN_CONTEXT_TOKENS = 1024
_MARKERS = "*o+x#@%&"


@dataclass(frozen=True)
class Series:
    """One model's memory per GPU (weights + reserve + KV) at increasing contexts."""

    model_id: str
    points: tuple[tuple[int, int], ...]
    fixed_bytes: int
    usable_bytes: int
    max_context_tokens: int
    memory_at: object  # callable: context tokens -> bytes per GPU


def curve_points(models: Sequence[ModelSpec], gpu: GpuSpec, request: SizingRequest,
                 max_context: int | None = None) -> list[Series]:  # fmt: skip
    """Return memory per GPU at every power of two from 1k to each model's context limit (or `max_context`)."""
    series = []
    for model in models:
        limit = max_context or model.max_position_embeddings
        base = estimate(model, gpu, dataclasses.replace(request, context_tokens=min(limit, MIN_CONTEXT_TOKENS)))
        fixed = base.weights_bytes_per_gpu + request.reserve_bytes
        tp, batch, precision = request.tensor_parallel_size, request.batch_size, base.kv_precision

        def memory_at(context: int, model=model, fixed=fixed, precision=precision, tp=tp, batch=batch) -> int:
            return fixed + batch * sequence_kv_bytes(model, precision, context, tp)

        contexts = []
        context = MIN_CONTEXT_TOKENS
        while context < limit:
            contexts.append(context)
            context *= 2
        contexts.append(limit)
        points = tuple((context, memory_at(context)) for context in contexts)
        series.append(Series(model.id, points, fixed, base.usable_memory_bytes, limit, memory_at))
    return series


def _context_label(tokens: int) -> str:
    if tokens >= 1024**2 and tokens % 1024**2 == 0:
        return f"{tokens // 1024**2}m"
    if tokens >= 1024 and tokens % 1024 == 0:
        return f"{tokens // 1024}k"
    return str(tokens)


def draw_chart(series: Sequence[Series], gpu: GpuSpec, width: int = 80, height: int = 16) -> str:
    """Draw the series as text: one marker per model, '-' for the GPU's usable memory."""
    label_width = 11
    plot_width = max(width - label_width - 2, 20)
    right = max(item.max_context_tokens for item in series)
    left = MIN_CONTEXT_TOKENS if right > MIN_CONTEXT_TOKENS else 1
    usable = series[0].usable_bytes
    top = max([usable, *(memory for item in series for _, memory in item.points)]) * 1.05

    def column_context(column: int) -> int:
        if right == left:
            return right
        return round(2 ** (math.log2(left) + column / (plot_width - 1) * (math.log2(right) - math.log2(left))))

    def row_of(num_bytes: int) -> int:
        return height - 1 - min(height - 1, round(num_bytes / top * (height - 1)))

    grid = [[" "] * plot_width for _ in range(height)]
    for column in range(plot_width):
        grid[row_of(usable)][column] = "-"
    for index, item in enumerate(series):
        marker = _MARKERS[index % len(_MARKERS)]
        for column in range(plot_width):
            context = column_context(column)
            if context > item.max_context_tokens:
                break
            grid[row_of(item.memory_at(context))][column] = marker

    lines = []
    for row_index, row in enumerate(grid):
        value = (height - 1 - row_index) / (height - 1) * top / GiB
        label = f"{value:7.1f} GiB" if row_index % 3 == 0 or row_index == height - 1 else ""
        lines.append(f"{label:>{label_width}} |" + "".join(row))
    lines.append(" " * label_width + " +" + "-" * plot_width)

    axis = [" "] * plot_width
    next_free = 0
    power = left
    while power <= right:
        if right == left:
            column = 0
        else:
            column = round((math.log2(power) - math.log2(left)) / (math.log2(right) - math.log2(left)) * (plot_width - 1))
        text = _context_label(power)
        if column >= next_free and column + len(text) <= plot_width:
            axis[column : column + len(text)] = list(text)
            next_free = column + len(text) + 2
        power *= 2
    lines.append(" " * (label_width + 2) + "".join(axis).rstrip())
    lines.append(" " * (label_width + 2) + "context in tokens, log scale")

    legend = ", ".join(f"{_MARKERS[index % len(_MARKERS)]} {item.model_id}" for index, item in enumerate(series))
    lines.append(f"{legend}; - usable memory of {gpu.id} ({usable / GiB:.1f} GiB per GPU); weights + reserve + KV per GPU")
    if len(series) > 1:
        lines.append("where curves meet, the marker of the model listed later is drawn")
    return "\n".join(lines)

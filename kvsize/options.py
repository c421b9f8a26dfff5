"""Parsing of command-line values into core objects, shared by every command.

Values arrive as strings so that kvsize, not the CLI framework, words every
error: one line naming the option, the value and what to give instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from kvsize.errors import InvalidInputError
from kvsize.precision import Precision, parse_precision, parse_weight_precision
from kvsize.sizing import DEFAULT_GPU_MEMORY_UTILIZATION, DEFAULT_RESERVE_BYTES, SizingRequest
from kvsize.units import parse_byte_size, parse_token_count


def parse_positive_int(text: str, option: str) -> int:
    """Parse a whole number of at least 1 written in ASCII digits."""
    cleaned = text.strip()
    if not cleaned.isascii() or not cleaned.isdigit():
        raise InvalidInputError(f"invalid value for {option}: {text!r}; expected a positive whole number")
    value = int(cleaned)
    if value < 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be at least 1")
    return value


def parse_fraction(text: str, option: str) -> Decimal:
    """Parse a number in (0, 1], rejecting NaN and infinities."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; expected a number in (0, 1], e.g. 0.9") from None
    if not value.is_finite() or not 0 < value <= 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be greater than 0 and at most 1")
    return value


def split_values(values: list[str] | None, option: str) -> list[str]:
    """Flatten repeated and comma-separated option values: `a,b --x c` gives a, b, c."""
    items: list[str] = []
    for value in values or []:
        for part in value.split(","):
            if not part.strip():
                raise InvalidInputError(f"invalid value for {option}: {value!r} has an empty item; "
                                        "separate values with single commas")  # fmt: skip
            items.append(part.strip())
    return items


@dataclass(frozen=True)
class RequestOptions:
    """Raw option strings for one sizing request, before parsing."""

    ctx: str
    batch: str = "1"
    kv_cache_dtype: str | None = None
    kv_group_size: str | None = None
    kv_zero_point: bool = False
    weights_dtype: str | None = None
    tensor_parallel_size: str = "1"
    gpu_memory_utilization: str = str(DEFAULT_GPU_MEMORY_UTILIZATION)
    reserve: str | None = None


def parse_kv_precision(dtype: str | None, group_size: str | None, zero_point: bool) -> Precision | None:
    """Return the KV precision from --kv-cache-dtype, --kv-group-size and --kv-zero-point, or None for the default."""
    group = parse_positive_int(group_size, "--kv-group-size") if group_size is not None else None
    if dtype is None:
        if group is not None or zero_point:
            raise InvalidInputError("--kv-group-size and --kv-zero-point need --kv-cache-dtype (e.g. int4)")
        return None
    return parse_precision(dtype, group, zero_point)


def build_request(options: RequestOptions) -> SizingRequest:
    """Parse every option of a request, raising InvalidInputError on the first bad value."""
    return SizingRequest(
        context_tokens=parse_token_count(options.ctx, "--ctx"),
        batch_size=parse_positive_int(options.batch, "--batch"),
        kv_precision=parse_kv_precision(options.kv_cache_dtype, options.kv_group_size, options.kv_zero_point),
        weight_precision=(
            parse_weight_precision(options.weights_dtype) if options.weights_dtype is not None else None
        ),
        tensor_parallel_size=parse_positive_int(options.tensor_parallel_size, "--tensor-parallel-size"),
        gpu_memory_utilization=parse_fraction(options.gpu_memory_utilization, "--gpu-memory-utilization"),
        reserve_bytes=(
            parse_byte_size(options.reserve, "--reserve") if options.reserve is not None else DEFAULT_RESERVE_BYTES
        ),
        reserve_is_default=options.reserve is None,
    )

"""Parsing of command-line values into core objects, shared by every command.

Values arrive as strings so that kvsize, not the CLI framework, words every
error: one line naming the option, the value and what to give instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from kvsize.errors import InvalidInputError
from kvsize.precision import Precision, parse_precision, parse_weight_precision
from kvsize.sizing import DEFAULT_GPU_MEMORY_UTILIZATION, DEFAULT_RESERVE_BYTES, SizingRequest, TokenPolicy
from kvsize.specs import ModelSpec
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


# Ratios below 1e-12 are typos; an exponent such as 1e-999999999 would also
# make an exact fraction with a billion-digit denominator.
MIN_RATIO = Decimal("1e-12")


def _decimal(text: str, option: str, expected: str) -> Decimal:
    """Parse a plain decimal number written in ASCII (Decimal alone also accepts other scripts' digits)."""
    cleaned = text.strip()
    try:
        if not cleaned.isascii():
            raise InvalidOperation
        return Decimal(cleaned)
    except InvalidOperation:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; expected {expected}") from None


def parse_fraction(text: str, option: str) -> Decimal:
    """Parse a number in (0, 1], rejecting NaN, infinities and values below 1e-12."""
    value = _decimal(text, option, "a number in (0, 1], e.g. 0.9")
    if not value.is_finite() or not 0 < value <= 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be greater than 0 and at most 1")
    if value < MIN_RATIO:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be at least 1e-12")
    return value


def split_values(values: list[str] | None, option: str) -> list[str]:
    """Flatten repeated and comma-separated option values: `a,b --x c` gives a, b, c."""
    items: list[str] = []
    for value in values or []:
        if not value.strip():
            raise InvalidInputError(f"invalid value for {option}: an empty value; give one or more comma-separated values")
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
    techniques: TechniqueOptions | None = None


@dataclass(frozen=True)
class TechniqueOptions:
    """Raw option strings for the what-if techniques: quantization, eviction, architecture, offload."""

    kv_quant_axis: str = "token"
    kv_outlier_fraction: str | None = None
    kv_keep_ratio: str | None = None
    kv_token_budget: str | None = None
    kv_keep_recent: str | None = None
    kv_heads: str | None = None
    cross_layer_share: str | None = None
    sliding_window: str | None = None
    sliding_window_layers: str = "all"
    cpu_offload: str | None = None


def parse_ratio(text: str, option: str, allow_zero: bool = False) -> Fraction:
    """Parse a ratio exactly (0.2 gives 1/5): in (0, 1], or in [0, 1) with `allow_zero`."""
    if not allow_zero:
        return Fraction(parse_fraction(text, option))
    value = _decimal(text, option, "a number from 0 to below 1")
    if not value.is_finite() or not 0 <= value < 1:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be at least 0 and below 1")
    if 0 < value < MIN_RATIO:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; it must be 0 or at least 1e-12")
    return Fraction(value)


def parse_kv_precision(dtype: str | None, group_size: str | None, zero_point: bool,
                       techniques: TechniqueOptions | None = None) -> Precision | None:  # fmt: skip
    """Return the KV precision from --kv-cache-dtype and its quantization options, or None for the default."""
    group = parse_positive_int(group_size, "--kv-group-size") if group_size is not None else None
    axis = (techniques.kv_quant_axis if techniques else "token").strip().lower()
    if axis not in ("token", "channel"):
        raise InvalidInputError(f"invalid value for --kv-quant-axis: {axis!r}; expected token or channel")
    outliers_text = techniques.kv_outlier_fraction if techniques else None
    outliers = parse_ratio(outliers_text, "--kv-outlier-fraction", allow_zero=True) if outliers_text is not None else None
    if dtype is None:
        if group is not None or zero_point or outliers is not None or axis != "token":
            raise InvalidInputError("--kv-group-size, --kv-zero-point, --kv-quant-axis and --kv-outlier-fraction "
                                    "need --kv-cache-dtype (e.g. int4)")  # fmt: skip
        return None
    if axis == "channel" and group is None:
        raise InvalidInputError("--kv-quant-axis channel needs --kv-group-size: the number of tokens per scale")
    return parse_precision(dtype, group, zero_point, group_axis=axis, outlier_fraction=outliers)


def parse_token_policy(techniques: TechniqueOptions | None) -> TokenPolicy | None:
    """Return the eviction policy from --kv-keep-ratio, --kv-token-budget and --kv-keep-recent, or None."""
    if techniques is None:
        return None
    ratio, budget, recent = techniques.kv_keep_ratio, techniques.kv_token_budget, techniques.kv_keep_recent
    if ratio is not None and budget is not None:
        raise InvalidInputError("--kv-keep-ratio and --kv-token-budget conflict: give one way to size the kept tokens")
    if ratio is None and budget is None:
        if recent is not None:
            raise InvalidInputError("--kv-keep-recent needs --kv-keep-ratio or --kv-token-budget")
        return None
    return TokenPolicy(
        keep_ratio=parse_ratio(ratio, "--kv-keep-ratio") if ratio is not None else None,
        token_budget=parse_token_count(budget, "--kv-token-budget") if budget is not None else None,
        keep_recent_tokens=parse_token_count(recent, "--kv-keep-recent") if recent is not None else 0,
    )


def apply_architecture_options(model: ModelSpec, techniques: TechniqueOptions | None) -> ModelSpec:
    """Return `model` changed by --kv-heads, --cross-layer-share and --sliding-window, in that order."""
    if techniques is None:
        return model
    from kvsize.whatif import with_cross_layer_sharing, with_kv_heads, with_sliding_window

    if techniques.kv_heads is not None:
        model = with_kv_heads(model, parse_positive_int(techniques.kv_heads, "--kv-heads"))
    if techniques.cross_layer_share is not None:
        model = with_cross_layer_sharing(model, parse_positive_int(techniques.cross_layer_share, "--cross-layer-share"))
    if techniques.sliding_window is not None:
        window = parse_token_count(techniques.sliding_window, "--sliding-window")
        model = with_sliding_window(model, window, techniques.sliding_window_layers.strip().lower())
    elif techniques.sliding_window_layers.strip().lower() != "all":
        raise InvalidInputError("--sliding-window-layers needs --sliding-window")
    return model


def build_request(options: RequestOptions) -> SizingRequest:
    """Parse every option of a request, raising InvalidInputError on the first bad value."""
    return SizingRequest(
        context_tokens=parse_token_count(options.ctx, "--ctx"),
        batch_size=parse_positive_int(options.batch, "--batch"),
        kv_precision=parse_kv_precision(options.kv_cache_dtype, options.kv_group_size, options.kv_zero_point,
                                        options.techniques),  # fmt: skip
        weight_precision=(
            parse_weight_precision(options.weights_dtype) if options.weights_dtype is not None else None
        ),
        tensor_parallel_size=parse_positive_int(options.tensor_parallel_size, "--tensor-parallel-size"),
        gpu_memory_utilization=parse_fraction(options.gpu_memory_utilization, "--gpu-memory-utilization"),
        reserve_bytes=(
            parse_byte_size(options.reserve, "--reserve") if options.reserve is not None else DEFAULT_RESERVE_BYTES
        ),
        reserve_is_default=options.reserve is None,
        token_policy=parse_token_policy(options.techniques),
        cpu_offload_bytes=(
            parse_byte_size(options.techniques.cpu_offload, "--cpu-offload")
            if options.techniques is not None and options.techniques.cpu_offload is not None
            else 0
        ),
    )

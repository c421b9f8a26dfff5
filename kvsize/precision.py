"""Number formats for KV caches and weights, counted in bits.

Every size is computed in bits first and converted to bytes only after the
multiplication, so a 3-bit or 4-bit cache never rounds to zero bytes.
A grouped format stores one scale (and optionally one zero point) for every
`group_size` consecutive values. Per-token groups run along one vector and
never span two, so a vector of `n` elements carries `ceil(n / group_size)`
scales. Per-channel groups run along the tokens of one channel instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from kvsize.errors import InvalidInputError

# Scales and zero points of integer KV formats are stored as fp16 (KIVI,
# KVQuant and the common Hugging Face quantized caches do this).
SCALE_BITS = 16


# Dense-and-sparse quantization (KVQuant) keeps outliers in a sparse matrix of
# compressed rows: each outlier stores its 16-bit value and a 16-bit position,
# and each row (one token's keys, or values, in one layer) a 32-bit offset.
OUTLIER_VALUE_BITS = 16
OUTLIER_INDEX_BITS = 16
SPARSE_ROW_OFFSET_BITS = 32


@dataclass(frozen=True)
class Precision:
    """A storage format: bits per element plus the per-group overhead.

    `group_axis` sets how groups are formed: "token" groups `group_size`
    consecutive elements of one vector (per-token quantization), "channel"
    groups one channel over `group_size` consecutive tokens (per-channel
    quantization, as KIVI does for keys). `outlier_fraction` keeps that share
    of values at 16 bits in a sparse side matrix.
    """

    name: str
    element_bits: int
    group_size: int | None = None
    group_overhead_bits: int = 0
    group_axis: str = "token"
    outlier_fraction: Fraction | None = None

    def vector_bits(self, num_elements: int) -> int:
        """Return the bits one token's vector of `num_elements` takes, per-token scales included.

        Per-channel scales and outliers are not per vector; `tokens_bits` counts them.
        """
        bits = num_elements * self.element_bits
        if self.group_size is not None and self.group_axis == "token":
            num_groups = -(-num_elements // self.group_size)
            bits += num_groups * self.group_overhead_bits
        return bits

    def tokens_bits(self, num_elements: int, num_tokens: int) -> int | Fraction:
        """Return the exact bits `num_tokens` vectors of `num_elements` take, every overhead included.

        Per-channel groups are counted whole (a partly filled group still has
        its scale); outliers are counted at their expected number, so the
        result may be a fraction of a bit until the sequence is rounded.
        """
        bits: int | Fraction = num_tokens * self.vector_bits(num_elements)
        if self.group_size is not None and self.group_axis == "channel":
            bits += -(-num_tokens // self.group_size) * num_elements * self.group_overhead_bits
        if self.outlier_fraction:
            bits += self.outlier_fraction * num_tokens * num_elements * (OUTLIER_VALUE_BITS + OUTLIER_INDEX_BITS)
        return bits

    def row_bits(self, num_tokens: int) -> int:
        """Return the bits of sparse-row offsets for `num_tokens` rows (0 without outliers)."""
        return num_tokens * SPARSE_ROW_OFFSET_BITS if self.outlier_fraction else 0

    def amortized_bits(self, num_elements: int) -> int | Fraction:
        """Return the average bits one token's vector costs, with per-channel scales spread over their group."""
        bits: int | Fraction = self.vector_bits(num_elements)
        if self.group_size is not None and self.group_axis == "channel":
            bits += Fraction(num_elements * self.group_overhead_bits, self.group_size)
        if self.outlier_fraction:
            bits += self.outlier_fraction * num_elements * (OUTLIER_VALUE_BITS + OUTLIER_INDEX_BITS)
        return bits

    def effective_bits(self, num_elements: int) -> float:
        """Return the average bits per element for vectors of `num_elements`, row offsets excluded."""
        return float(self.amortized_bits(num_elements) / num_elements)

    def describe(self) -> str:
        """Return the name with its grouping and outliers, e.g. `int4 (group 64 per token, +32 bits/group)`."""
        parts = []
        if self.group_size is not None:
            parts.append(f"group {self.group_size} per {self.group_axis}, +{self.group_overhead_bits} bits/group")
        if self.outlier_fraction:
            parts.append(f"{float(self.outlier_fraction):.2%} outliers at 16 bits")
        return f"{self.name} ({'; '.join(parts)})" if parts else self.name


# Formats with a fixed grouping defined by their specification:
# NVFP4 keeps one FP8 (E4M3) scale per 16 FP4 values; MXFP4 (OCP microscaling)
# keeps one 8-bit power-of-two scale per 32 values.
_BLOCK_FORMATS = {
    "nvfp4": Precision("nvfp4", 4, 16, 8),
    "mxfp4": Precision("mxfp4", 4, 32, 8),
}

_PLAIN_FORMATS = {
    "fp32": 32,
    "fp16": 16,
    "bf16": 16,
    "fp8": 8,
    "fp8_e4m3": 8,
    "fp8_e5m2": 8,
    "int8": 8,
    "int4": 4,
}

_ALIASES = {
    "float32": "fp32",
    "float16": "fp16",
    "half": "fp16",
    "bfloat16": "bf16",
    "float8": "fp8",
    "fp8-e4m3": "fp8_e4m3",
    "fp8-e5m2": "fp8_e5m2",
    "e4m3": "fp8_e4m3",
    "e5m2": "fp8_e5m2",
}

_INT_WIDTH = re.compile(r"int([0-9]{1,2})", re.ASCII)

KV_DTYPE_HELP = (
    "fp32, fp16, bf16, fp8 (fp8_e4m3, fp8_e5m2), int8, int4, nvfp4, mxfp4, "
    "or intN for any width N from 1 to 16 (int2, int3, int6, ...)"
)


def canonical_dtype_name(name: str) -> str:
    """Return the canonical spelling of a dtype name, e.g. `bfloat16` -> `bf16`."""
    lowered = name.strip().lower()
    return _ALIASES.get(lowered, lowered)


def is_known_dtype(name: str) -> bool:
    """Return whether `name` is a dtype kvsize can size."""
    try:
        parse_precision(name)
    except InvalidInputError:
        return False
    return True


def parse_precision(
    name: str,
    group_size: int | None = None,
    zero_point: bool = False,
    option: str = "--kv-cache-dtype",
    group_axis: str = "token",
    outlier_fraction: Fraction | None = None,
) -> Precision:
    """Build a Precision from a dtype name and an optional quantization group.

    `group_size` adds one fp16 scale per group, and `zero_point` one fp16 zero
    point more. The block formats nvfp4 and mxfp4 have their grouping fixed by
    their specification and accept no other.
    """
    canonical = canonical_dtype_name(name)
    if group_size is not None and group_size < 1:
        raise InvalidInputError(f"invalid group size {group_size}: it must be at least 1 element")

    if group_axis not in ("token", "channel"):
        raise InvalidInputError(f"invalid quantization axis {group_axis!r}: expected token or channel")
    if outlier_fraction is not None and not 0 <= outlier_fraction < 1:
        raise InvalidInputError(f"invalid outlier fraction {float(outlier_fraction)}: it must be at least 0 and below 1")

    if canonical in _BLOCK_FORMATS:
        if group_size is not None or zero_point or outlier_fraction:
            raise InvalidInputError(
                f"invalid quantization group for {canonical}: its scale grouping is fixed by the format; "
                "drop the group-size, zero-point and outlier options"
            )
        return _BLOCK_FORMATS[canonical]

    if canonical in _PLAIN_FORMATS:
        bits = _PLAIN_FORMATS[canonical]
        if bits >= 16 and (group_size is not None or zero_point or outlier_fraction):
            raise InvalidInputError(
                f"invalid quantization group for {canonical}: a {bits}-bit float cache is not quantized and "
                "stores no scales; drop --kv-group-size and --kv-zero-point"
            )
    else:
        match = _INT_WIDTH.fullmatch(canonical)
        if match is None or not 1 <= int(match.group(1)) <= 16:
            raise InvalidInputError(f"invalid value for {option}: {name!r}; expected one of {KV_DTYPE_HELP}")
        bits = int(match.group(1))
        canonical = f"int{bits}"

    outliers = outlier_fraction or None
    if group_size is None:
        if zero_point:
            raise InvalidInputError("a zero point needs a quantization group: add --kv-group-size")
        return Precision(canonical, bits, outlier_fraction=outliers)
    overhead = SCALE_BITS * (2 if zero_point else 1)
    return Precision(canonical, bits, group_size, overhead, group_axis, outliers)


# Weight formats as published checkpoints store them. Integer 4-bit weights
# (GPTQ, AWQ) carry an fp16 scale per group of 128 weights, so they cost 4.125
# bits per weight; fp8 checkpoints carry per-tensor or 128x128 block scales,
# which add less than 0.01% and are not counted.
WEIGHT_FORMATS = {
    "fp32": Precision("fp32", 32),
    "fp16": Precision("fp16", 16),
    "bf16": Precision("bf16", 16),
    "fp8": Precision("fp8", 8),
    "int8": Precision("int8", 8),
    "int4": Precision("int4", 4, 128, SCALE_BITS),
    "mxfp4": _BLOCK_FORMATS["mxfp4"],
    "nvfp4": _BLOCK_FORMATS["nvfp4"],
}


def parse_weight_precision(name: str, option: str = "--weights-dtype") -> Precision:
    """Return the weight format for `name` (fp32, fp16, bf16, fp8, int8, int4, mxfp4, nvfp4)."""
    canonical = canonical_dtype_name(name)
    if canonical in ("fp8_e4m3", "fp8_e5m2"):
        canonical = "fp8"
    if canonical not in WEIGHT_FORMATS:
        raise InvalidInputError(
            f"invalid value for {option}: {name!r}; expected one of {', '.join(WEIGHT_FORMATS)}"
        )
    return WEIGHT_FORMATS[canonical]

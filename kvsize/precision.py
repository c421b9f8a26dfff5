"""Number formats for KV caches and weights, counted in bits.

Every size is computed in bits first and converted to bytes only after the
multiplication, so a 3-bit or 4-bit cache never rounds to zero bytes.
A grouped format stores one scale (and optionally one zero point) for every
`group_size` consecutive elements of a vector; the groups never span two
vectors, so a vector of `n` elements carries `ceil(n / group_size)` of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kvsize.errors import InvalidInputError

# Scales and zero points of integer KV formats are stored as fp16 (KIVI,
# KVQuant and the common Hugging Face quantized caches do this).
SCALE_BITS = 16


@dataclass(frozen=True)
class Precision:
    """A storage format: bits per element plus the per-group overhead."""

    name: str
    element_bits: int
    group_size: int | None = None
    group_overhead_bits: int = 0

    def vector_bits(self, num_elements: int) -> int:
        """Return the bits one vector of `num_elements` takes, scales included."""
        bits = num_elements * self.element_bits
        if self.group_size is not None:
            num_groups = -(-num_elements // self.group_size)
            bits += num_groups * self.group_overhead_bits
        return bits

    def effective_bits(self, num_elements: int) -> float:
        """Return the average bits per element for vectors of `num_elements`."""
        return self.vector_bits(num_elements) / num_elements

    def describe(self) -> str:
        """Return the name with its grouping, e.g. `int4 (group 64, +32 bits/group)`."""
        if self.group_size is None:
            return self.name
        return f"{self.name} (group {self.group_size}, +{self.group_overhead_bits} bits/group)"


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
) -> Precision:
    """Build a Precision from a dtype name and an optional quantization group.

    `group_size` adds one fp16 scale per group, and `zero_point` one fp16 zero
    point more. The block formats nvfp4 and mxfp4 have their grouping fixed by
    their specification and accept no other.
    """
    canonical = canonical_dtype_name(name)
    if group_size is not None and group_size < 1:
        raise InvalidInputError(f"invalid group size {group_size}: it must be at least 1 element")

    if canonical in _BLOCK_FORMATS:
        if group_size is not None or zero_point:
            raise InvalidInputError(
                f"invalid quantization group for {canonical}: its scale grouping is fixed by the format; "
                "drop the group-size and zero-point options"
            )
        return _BLOCK_FORMATS[canonical]

    if canonical in _PLAIN_FORMATS:
        bits = _PLAIN_FORMATS[canonical]
        if bits >= 16 and (group_size is not None or zero_point):
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

    if group_size is None:
        if zero_point:
            raise InvalidInputError("a zero point needs a quantization group: add --kv-group-size")
        return Precision(canonical, bits)
    overhead = SCALE_BITS * (2 if zero_point else 1)
    return Precision(canonical, bits, group_size, overhead)


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

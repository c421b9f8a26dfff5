"""KV and weight precisions: bits per element and grouped-scale overhead."""

import pytest

from kvsize.errors import InvalidInputError
from kvsize.precision import parse_precision, parse_weight_precision


@pytest.mark.parametrize(
    ("name", "bits"),
    [
        ("fp32", 32),
        ("fp16", 16),
        ("bf16", 16),
        ("bfloat16", 16),
        ("fp8", 8),
        ("fp8_e4m3", 8),
        ("fp8_e5m2", 8),
        ("int8", 8),
        ("int4", 4),
        ("int2", 2),
        ("int3", 3),
        ("int6", 6),
        ("int1", 1),
        ("int16", 16),
        ("FP8", 8),
    ],
)
def test_plain_dtype_bits(name, bits):
    precision = parse_precision(name)
    assert precision.element_bits == bits
    assert precision.vector_bits(128) == 128 * bits


@pytest.mark.parametrize("name", ["int0", "int17", "int", "fp7", "float64", "", "q4_0"])
def test_unknown_dtype_rejected(name):
    with pytest.raises(InvalidInputError):
        parse_precision(name)


def test_nvfp4_has_fp8_scale_per_16():
    # 128 FP4 values = 512 bits, plus 8 E4M3 scales of 8 bits = 576 bits (4.5 bits per value).
    nvfp4 = parse_precision("nvfp4")
    assert nvfp4.vector_bits(128) == 576
    assert nvfp4.effective_bits(128) == 4.5


def test_mxfp4_has_8bit_scale_per_32():
    # 128 values = 512 bits plus 4 scales of 8 bits = 544 bits (4.25 bits per value).
    assert parse_precision("mxfp4").vector_bits(128) == 544


def test_group_scale_overhead():
    # int4, one fp16 scale per 32 elements: 128 x 4 + 4 x 16 = 576 bits.
    assert parse_precision("int4", group_size=32).vector_bits(128) == 576
    # With a zero point too: 128 x 4 + 4 x 32 = 640 bits = 5 bits per element.
    assert parse_precision("int4", group_size=32, zero_point=True).vector_bits(128) == 640


def test_group_does_not_span_vectors():
    # A 100-element vector with groups of 64 needs 2 groups, not 100/64.
    assert parse_precision("int2", group_size=64).vector_bits(100) == 100 * 2 + 2 * 16


def test_block_formats_reject_custom_group():
    with pytest.raises(InvalidInputError):
        parse_precision("nvfp4", group_size=32)


def test_zero_point_needs_group():
    with pytest.raises(InvalidInputError):
        parse_precision("int4", zero_point=True)


def test_int4_weights_include_group_scales():
    # GPTQ/AWQ layout: 4 bits plus an fp16 scale per 128 weights = 4.125 bits per weight.
    assert parse_weight_precision("int4").vector_bits(1280) == 1280 * 4 + 10 * 16


def test_weight_dtype_rejects_research_widths():
    with pytest.raises(InvalidInputError):
        parse_weight_precision("int3")

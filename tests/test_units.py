"""Parsing and formatting of token counts and memory sizes."""

import pytest

from kvsize.errors import InvalidInputError
from kvsize.units import GiB, format_bytes, parse_byte_size, parse_token_count


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("131072", 131072),
        ("128k", 131072),  # k is 1024, as context lengths are quoted
        ("128K", 131072),
        ("1m", 1048576),
        ("1M", 1048576),
        ("1.5k", 1536),
        ("32k", 32768),
        (" 4096 ", 4096),  # surrounding whitespace from shell quoting is ignored
    ],
)
def test_token_count_valid(text, tokens):
    assert parse_token_count(text) == tokens


@pytest.mark.parametrize(
    "text",
    ["0", "-5", "abc", "128kb", "128 k", "1.3k", "", "   ", "１２８k", "128g", "1e3", "0k", "0.0001k", "nan"],
)
def test_token_count_rejected(text):
    with pytest.raises(InvalidInputError) as error:
        parse_token_count(text, "--ctx")
    assert "--ctx" in str(error.value)


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("2GiB", 2 * GiB),
        ("2gib", 2 * GiB),
        ("512MiB", 512 * 1024**2),
        ("80GB", 80 * 10**9),  # GB is decimal
        ("1073741824B", GiB),
        ("0", 0),
        ("35.65GiB", 38278896025),  # 35.65 x 2^30 = 38,278,896,025.6, truncated to whole bytes
        ("1.5 GiB", 3 * GiB // 2),
    ],
)
def test_byte_size_valid(text, num_bytes):
    assert parse_byte_size(text, "--reserve") == num_bytes


@pytest.mark.parametrize("text", ["2 GiBs", "-1GiB", "GiB", "2XB", "", "two", "3"])
def test_byte_size_rejected(text):
    with pytest.raises(InvalidInputError) as error:
        parse_byte_size(text, "--reserve")
    assert "--reserve" in str(error.value)


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (42949672960, "40.00 GiB"),
        (327680, "320.00 KiB"),
        (512, "512 B"),
        (-3 * GiB, "-3.00 GiB"),
        (5 * 1024**4, "5.00 TiB"),
    ],
)
def test_format_bytes(num_bytes, text):
    assert format_bytes(num_bytes) == text

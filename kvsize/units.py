"""Units: byte and token constants, parsing of sizes, formatting for people.

Memory is always an integer number of bytes inside kvsize. GiB means 2**30
bytes and GB means 10**9 bytes; the two are never mixed. Token-count suffixes
are binary: `k` = 1024 and `m` = 1024**2, so `128k` is 131072 tokens, as
context lengths are quoted in the field.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from kvsize.errors import InvalidInputError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
KB = 1000
MB = 1000**2
GB = 1000**3
TB = 1000**4

# Token counts above 2^40 (about 1.1 trillion) and memory sizes above 2^60
# bytes (1 EiB) are typos, not plans.
MAX_TOKENS = 2**40
MAX_BYTES = 2**60

TOKEN_SUFFIXES = {"": 1, "k": 1024, "m": 1024**2}

BYTE_UNITS = {
    "b": 1,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "tib": TiB,
    "kb": KB,
    "mb": MB,
    "gb": GB,
    "tb": TB,
}

# ASCII digits only: `\d` would also accept full-width and other Unicode digits.
_TOKEN_PATTERN = re.compile(r"([0-9]+(?:\.[0-9]+)?)([kKmM]?)", re.ASCII)
_BYTES_PATTERN = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]*)", re.ASCII)


def parse_token_count(text: str, option: str = "--ctx") -> int:
    """Parse a positive token count such as `131072`, `128k`, `1.5k` or `1m`.

    Raises InvalidInputError for zero, negatives, unknown suffixes and values
    that are not a whole number of tokens (`1.3k` is 1331.2 tokens).
    """
    cleaned = text.strip()
    match = _TOKEN_PATTERN.fullmatch(cleaned)
    if match is None:
        raise InvalidInputError(
            f"invalid value for {option}: {text!r} is not a token count; "
            "use a positive whole number with an optional k (x1024) or m (x1048576) suffix, e.g. 131072 or 128k"
        )
    number, suffix = match.groups()
    tokens = Decimal(number) * TOKEN_SUFFIXES[suffix.lower()]
    if tokens != tokens.to_integral_value():
        raise InvalidInputError(
            f"invalid value for {option}: {text!r} is {tokens} tokens, not a whole number; "
            "give the exact count instead"
        )
    if tokens <= 0:
        raise InvalidInputError(f"invalid value for {option}: {text!r}; the token count must be at least 1")
    if tokens > MAX_TOKENS:
        raise InvalidInputError(f"invalid value for {option}: {text!r} is more than {MAX_TOKENS:,} tokens (2^40)")
    return int(tokens)


def parse_byte_size(text: str, option: str) -> int:
    """Parse a memory size such as `2GiB`, `512MiB`, `80GB` or `1073741824`.

    A unit is required, because a bare `3` meant as 3 GiB would silently be
    3 bytes; only `0` may go without one. Binary units (KiB, MiB, GiB, TiB) and
    decimal units (KB, MB, GB, TB) are case-insensitive, and `B` is bytes. A
    fractional byte count, as in `35.65GiB`, is truncated to whole bytes.
    """
    cleaned = text.strip()
    match = _BYTES_PATTERN.fullmatch(cleaned)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in BYTE_UNITS and unit != "":
        raise InvalidInputError(
            f"invalid value for {option}: {text!r} is not a memory size; "
            "use a number with a unit such as 2GiB, 512MiB or 80GB (GiB = 2^30 bytes, GB = 10^9 bytes)"
        )
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal numbers
        raise InvalidInputError(f"invalid value for {option}: {text!r} is not a number") from None
    if not unit and number != 0:
        raise InvalidInputError(
            f"invalid value for {option}: {text!r} has no unit; write {match.group(1)}GiB, {match.group(1)}GB "
            f"or {match.group(1)}B for bytes"
        )
    num_bytes = int(number * BYTE_UNITS[unit or "b"])
    if num_bytes > MAX_BYTES:
        raise InvalidInputError(f"invalid value for {option}: {text!r} is more than 1 EiB (2^60 bytes)")
    return num_bytes


def format_bytes(num_bytes: int) -> str:
    """Format bytes with a binary unit, e.g. `40.00 GiB`; negative sizes keep their sign."""
    sign = "-" if num_bytes < 0 else ""
    size = abs(num_bytes)
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if size >= factor:
            return f"{sign}{size / factor:.2f} {unit}"
    return f"{sign}{size} B"


def format_tokens(tokens: int) -> str:
    """Format a token count with thousands separators, e.g. `131,072 tokens`."""
    return f"{tokens:,} tokens"

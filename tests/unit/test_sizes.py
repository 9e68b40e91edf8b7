"""Sizes as users type them (`16GB`, `16e9B`) and as entrenar prints them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrenar_tui.core.errors import InvalidInputError
from entrenar_tui.core.sizes import format_bytes, parse_size

GIB = 2**30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16GB", 16 * GIB),  # GB means GiB, as nvidia-smi does
        ("16GiB", 16 * GIB),
        ("16gb", 16 * GIB),
        ("16 GB", 16 * GIB),
        ("16G", 16 * GIB),
        ("16Gi", 16 * GIB),
        ("16e9B", 16_000_000_000),  # the way to ask for decimal bytes
        ("512MB", 512 * 2**20),
        ("512MiB", 512 * 2**20),
        ("1.5GB", 3 * GIB // 2),
        ("64KB", 64 * 1024),
        ("2TB", 2 * 2**40),
        ("1024B", 1024),
        ("0B", 0),
        ("  80GB  ", 80 * GIB),
    ],
)
def test_parse_size_reads_binary_units_and_bytes(text, expected):
    assert parse_size(text) == expected


def test_parse_size_takes_numbers_as_bytes():
    assert parse_size(4096) == 4096
    assert parse_size(1.5e9) == 1_500_000_000


@pytest.mark.parametrize("bare", ["8", "16e9", "1024", "0", " 80 "])
def test_typed_sizes_need_a_unit(bare):
    """`--vram 8` means 8 GB to a person and 8 bytes to a parser: ask instead of guessing."""
    with pytest.raises(InvalidInputError) as caught:
        parse_size(bare)
    assert "no unit" in caught.value.message
    assert f"{bare.strip()}GB" in caught.value.hint


@pytest.mark.parametrize(
    "bad", ["", "GB", "abc", "-1GB", "16XB", "16iB", "1e999GB", "inf", "16 G B"]
)
def test_parse_size_rejects_what_is_not_a_size(bad):
    with pytest.raises(InvalidInputError) as caught:
        parse_size(bad)
    assert "16GB" in caught.value.hint


def test_parse_size_rejects_booleans_and_negative_numbers():
    for bad in (True, -5):
        with pytest.raises(InvalidInputError):
            parse_size(bad)


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (int(1.5 * GIB), "1.50 GiB"),
        (3 * 2**40, "3.00 TiB"),
        (2**20 - 1, "1.00 MiB"),  # rounds up into the next unit instead of "1024.00 KiB"
        (-2 * GIB, "-2.00 GiB"),
    ],
)
def test_format_bytes_uses_binary_units(count, text):
    assert format_bytes(count) == text


@given(st.integers(min_value=1024, max_value=2**50))
def test_format_then_parse_is_within_rounding(count):
    number, unit = format_bytes(count).split()
    back = parse_size(number + unit)
    assert (
        abs(back - count) <= 0.005 * 1024 ** ["KiB", "MiB", "GiB", "TiB", "PiB"].index(unit) * 1024
    )

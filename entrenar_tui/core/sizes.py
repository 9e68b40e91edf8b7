"""Byte sizes: reading what users type (`16GB`, `512MiB`, `16e9B`) and writing them back.

Input follows the project contract: `16GB` and `16GiB` both mean 16 x 2^30 bytes, because GPU
vendors and nvidia-smi say "GB" for binary gigabytes. A number with a bare `B` is a count of
bytes (`16e9B` is how to ask for decimal gigabytes). Typed text needs a unit: `--vram 8` is
refused with a hint rather than read as 8 bytes or guessed as 8 GB. Python numbers (the JSON
contract) are bytes. Output is binary.
"""

from __future__ import annotations

import math
import re

from .errors import InvalidInputError

_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5}
_SIZE = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTP]?)(I?B?)\s*$", re.IGNORECASE
)
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")

_HINT = "write a size with a unit: 16GB, 16GiB, 512MB, 1.5GB, or 16e9B for a count of bytes"


def parse_size(value: str | int | float) -> int:
    """Bytes from `16GB`, `16GiB`, `512MB`, `1.5G`, `16e9B`, or a Python number of bytes."""
    if isinstance(value, bool):
        raise InvalidInputError(f"not a size: {value!r}", _HINT)
    if isinstance(value, int | float):
        return _checked(float(value), repr(value))
    match = _SIZE.match(str(value))
    if not match:
        raise InvalidInputError(f"not a size: {value!r}", _HINT)
    number, prefix, suffix = match.groups()
    if prefix == "" and suffix.upper().startswith("I"):
        raise InvalidInputError(f"not a size: {value!r}", _HINT)
    if prefix == "" and suffix == "":
        raise InvalidInputError(
            f"size {value!r} has no unit",
            f"write {number}GB (= {number} GiB), {number}MB, or {number}B for a count of bytes",
        )
    return _checked(float(number) * 1024 ** _POWERS[prefix.upper()], repr(value))


def _checked(amount: float, shown: str) -> int:
    if not math.isfinite(amount) or amount < 0:
        raise InvalidInputError(f"not a size: {shown} (sizes are finite and not negative)", _HINT)
    return int(round(amount))


def format_bytes(count: int | float) -> str:
    """`1.50 GiB`, `512 B`: binary units, two decimals above a KiB."""
    sign = "-" if count < 0 else ""
    amount = float(abs(count))
    if amount < 1024:
        return f"{sign}{int(amount)} B"
    power = min(int(math.log(amount, 1024)), len(_UNITS) - 1)
    scaled = amount / 1024**power
    if scaled >= 1023.995 and power < len(_UNITS) - 1:  # 1023.999 KiB must read 1.00 MiB
        power, scaled = power + 1, scaled / 1024
    return f"{sign}{scaled:.2f} {_UNITS[power]}"

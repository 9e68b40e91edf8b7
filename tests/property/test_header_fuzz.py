"""Fuzz the strict safetensors header reader.

For any bytes, `read_header` either returns a header whose tensors tile the data region
exactly (and which the reference reader, safetensors' safe_open, also accepts: ours is at
least as strict), or raises CorruptFileError naming the broken rule with a hint. Never
another exception, never a hang.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from entrenar_tui.core.errors import CorruptFileError
from entrenar_tui.core.models.safetensors_format import read_header
from entrenar_tui.core.models.tensors import DTYPE_BYTES

FUZZ = settings(
    max_examples=50, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "f.safetensors"


def check(path, blob: bytes) -> None:
    path.write_bytes(blob)
    try:
        header = read_header(path)
    except CorruptFileError as exc:
        assert exc.hint and exc.problem_code and "\n" not in exc.message
        return
    position = header.data_start
    for t in sorted(header.tensors, key=lambda t: (t.offset, t.nbytes)):
        assert t.offset == position and t.nbytes >= 0
        position += t.nbytes
    assert position == header.file_size == len(blob)
    with safe_open(str(path), framework="np") as reference:
        assert set(reference.keys()) == {t.name for t in header.tensors}


def build(header: dict, data_len: int) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data_len)


@st.composite
def valid_files(draw) -> bytes:
    """A well-formed file: contiguous tensors of random dtype and shape."""
    header, offset = {}, 0
    names = draw(
        st.lists(
            st.text(min_size=1, max_size=8).filter(lambda n: n != "__metadata__"),
            max_size=5,
            unique=True,
        )
    )
    for name in names:
        dtype = draw(st.sampled_from(sorted(DTYPE_BYTES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        size = DTYPE_BYTES[dtype]
        for dim in shape:
            size *= dim
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)
        )
    return build(header, offset)


_JSON_LEAVES = (
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=6)
)
_ANY_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)
_ENTRY = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from([*DTYPE_BYTES, "F7", "f32", ""]) | _JSON_LEAVES,
        "shape": st.lists(st.integers(-1, 5) | st.booleans() | st.floats(0, 4), max_size=3)
        | _ANY_JSON,
        "data_offsets": st.lists(st.integers(-2, 40) | st.booleans(), min_size=0, max_size=3)
        | _ANY_JSON,
    }
)


@given(
    st.binary(max_size=300)
    | st.builds(
        lambda body, n: struct.pack("<Q", n) + body,
        st.binary(max_size=200),
        st.integers(0, 2**64 - 1),
    )
)
@FUZZ
def test_random_bytes(scratch, blob):
    check(scratch, blob)


@given(valid_files(), st.data())
@FUZZ
def test_mutated_valid_files(scratch, blob, data):
    mutated = bytearray(blob)
    for _ in range(data.draw(st.integers(0, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if action == "flip" and mutated:
            mutated[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del mutated[at:]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    check(scratch, bytes(mutated))


@given(
    st.dictionaries(st.text(max_size=6), _ENTRY | _ANY_JSON, max_size=4),
    st.none() | _ANY_JSON,
    st.integers(0, 64),
)
@FUZZ
def test_random_json_headers(scratch, entries, metadata, data_len):
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    check(scratch, build(header, data_len))  # NaN/Infinity written by json.dumps included


@given(valid_files())
@FUZZ
def test_valid_files_are_accepted(scratch, blob):
    scratch.write_bytes(blob)
    header = read_header(scratch)  # raises if the reader is stricter than it should be
    assert header.file_size == len(blob)

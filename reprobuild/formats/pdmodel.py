"""Paddle programs (`.pdmodel`, a serialized `ProgramDesc`): remove the attributes that record *where* a model
was exported from, without touching what it computes.

`paddle.jit.save` and `save_inference_model` give some ops an `op_callstack` attribute: the Python stack at
the time the op was made, with the exporting script's absolute path, line numbers and site-packages paths.
It is debugging metadata (the executor never reads it), so removing it leaves the program's computation as
it was while making the bytes independent of the checkout path and the venv.

This module edits the protobuf wire format directly, so it needs neither Paddle nor protobuf, and it works
on any `.pdmodel`, whoever wrote it. Every other byte is kept in its order; only the removed attributes and
the lengths of the messages that held them change. The messages walked (from Paddle's framework.proto):

    ProgramDesc { repeated BlockDesc blocks = 1; ... }
    BlockDesc   { ...; repeated OpDesc ops = 4; ... }
    OpDesc      { ...; repeated Attr attrs = 4; ... }
    OpDesc.Attr { required string name = 1; ... }
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# The attributes that carry build-machine facts (paths, stacks) and never affect execution.
LOCATION_ATTRS = frozenset({"op_callstack"})

_PROGRAM_BLOCKS = 1
_BLOCK_OPS = 4
_OP_ATTRS = 4
_ATTR_NAME = 1

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5


class ProgramFormatError(ValueError):
    """The bytes are not a well-formed protobuf message of the expected shape."""


@dataclass(frozen=True)
class _Field:
    number: int
    wire_type: int
    start: int  # offset of the tag
    value_start: int  # offset of the value (after the length prefix for LEN fields)
    end: int  # offset after the value


def varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProgramFormatError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProgramFormatError("varint longer than 10 bytes")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def fields(data: bytes) -> Iterator[_Field]:
    """The fields of one protobuf message, in order, with their offsets (the one wire-format reader)."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProgramFormatError(f"field number 0 at offset {start}")
        if wire == _VARINT:
            _, end = varint(data, pos)
            value_start = pos
        elif wire == _I64:
            value_start, end = pos, pos + 8
        elif wire == _I32:
            value_start, end = pos, pos + 4
        elif wire == _LEN:
            length, value_start = varint(data, pos)
            end = value_start + length
        else:
            raise ProgramFormatError(f"unsupported wire type {wire} at offset {start}")
        if end > len(data):
            raise ProgramFormatError(f"field {number} at offset {start} runs past the end")
        yield _Field(number, wire, start, value_start, end)
        pos = end


def _rewrite(data: bytes, edit: dict[int, object]) -> tuple[bytes, int]:
    """Copy a message, passing the LEN fields numbered in `edit` through their editor (a function returning
    the new payload, or None to drop the field). Returns the bytes and the number of attributes removed."""
    out = bytearray()
    removed = 0
    for f in fields(data):
        editor = edit.get(f.number)
        if editor is None or f.wire_type != _LEN:
            out += data[f.start:f.end]
            continue
        payload, n = editor(data[f.value_start:f.end])  # type: ignore[operator]
        removed += n
        if payload is None:
            continue
        out += _encode_varint((f.number << 3) | _LEN) + _encode_varint(len(payload)) + payload
    return bytes(out), removed


def attr_name(attr: bytes) -> str | None:
    for f in fields(attr):
        if f.number == _ATTR_NAME and f.wire_type == _LEN:
            return attr[f.value_start:f.end].decode("utf-8", "replace")
    return None


def _attr(attr: bytes, names: frozenset[str]) -> tuple[bytes | None, int]:
    return (None, 1) if attr_name(attr) in names else (attr, 0)


def strip_attrs(program: bytes, names: frozenset[str] = LOCATION_ATTRS) -> bytes:
    """The program with every op attribute named in `names` removed, in every block (pure; bytes in, bytes out).

    Raises ProgramFormatError when `program` is not a serialized ProgramDesc.
    """
    if not program:
        raise ProgramFormatError("empty program")

    def op(data: bytes) -> tuple[bytes, int]:
        return _rewrite(data, {_OP_ATTRS: lambda a: _attr(a, names)})

    def block(data: bytes) -> tuple[bytes, int]:
        return _rewrite(data, {_BLOCK_OPS: op})

    result, _ = _rewrite(program, {_PROGRAM_BLOCKS: block})
    return result


def strip_op_callstack(program: bytes) -> bytes:
    """The program without `op_callstack` attributes: what reprobuild writes for every exported `.pdmodel`."""
    return strip_attrs(program, LOCATION_ATTRS)


def op_attr_names(program: bytes) -> list[tuple[int, str, list[str]]]:
    """(block index, op type, attribute names) for every op: to inspect what a program carries."""
    result = []
    for bi, blk in enumerate(f for f in fields(program) if f.number == _PROGRAM_BLOCKS and f.wire_type == _LEN):
        block = program[blk.value_start:blk.end]
        for opf in fields(block):
            if opf.number != _BLOCK_OPS or opf.wire_type != _LEN:
                continue
            op = block[opf.value_start:opf.end]
            op_type = ""
            names = []
            for f in fields(op):
                if f.number == 3 and f.wire_type == _LEN:
                    op_type = op[f.value_start:f.end].decode("utf-8", "replace")
                elif f.number == _OP_ATTRS and f.wire_type == _LEN:
                    names.append(attr_name(op[f.value_start:f.end]) or "")
            result.append((bi, op_type, names))
    return result


def count_attrs(program: bytes, name: str) -> int:
    return sum(names.count(name) for _, _, names in op_attr_names(program))

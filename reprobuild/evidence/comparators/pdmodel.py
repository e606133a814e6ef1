"""Paddle programs (`.pdmodel`): which op differs, and in which attribute — without importing paddle.

A `.pdmodel` is a protobuf `ProgramDesc` (paddle/fluid/framework/framework.proto). The wire format is
read by reprobuild/formats/pdmodel.py (the one reader, which the export harness uses to strip it), just far enough:

    ProgramDesc { repeated BlockDesc blocks = 1; Version version = 4; OpVersionMap op_version_map = 5; }
    BlockDesc   { int32 idx = 1; int32 parent_idx = 2; repeated VarDesc vars = 3; repeated OpDesc ops = 4; }
    VarDesc     { string name = 1; ... }
    OpDesc      { repeated Var inputs = 1; repeated Var outputs = 2; string type = 3; repeated Attr attrs = 4; }
    OpDesc.Attr { string name = 1; AttrType type = 2; int32 i = 3; float f = 4; string s = 5;
                  repeated int32 ints = 6; repeated float floats = 7; repeated string strings = 8; ... }

`paddle.jit.save` writes the exporting script's absolute path, line numbers and site-packages paths
into every feed/fetch op's `op_callstack` attribute: that is `paddle-op-callstack`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from reprobuild.evidence.comparators.base import Cause, Context, clip, cut, examples, plural, short
from reprobuild.formats import pdmodel as protobuf

MAX_PROGRAM_BYTES = 256 << 20
WIRE_VARINT, WIRE_I64, WIRE_I32 = 0, 1, 5
WireError = protobuf.ProgramFormatError  # bytes that are not a well-formed protobuf message

Field = tuple[int, int, "int | bytes"]


def decode(buf: bytes) -> list[Field]:
    """One message's fields, in order: (field number, wire type, int or bytes), read by reprobuild.formats.pdmodel."""
    return [(f.number, f.wire_type, protobuf.varint(buf, f.value_start)[0] if f.wire_type == WIRE_VARINT
             else buf[f.value_start:f.end]) for f in protobuf.fields(buf)]


def _bytes(fields: list[Field], number: int) -> list[bytes]:
    return [v for n, w, v in fields if n == number and isinstance(v, bytes)]


def _string(fields: list[Field], number: int) -> str:
    values = _bytes(fields, number)
    return values[0].decode("utf-8", "replace") if values else ""


def _int(fields: list[Field], number: int, default: int = 0) -> int:
    values = [v for n, w, v in fields if n == number and isinstance(v, int)]
    return values[0] if values else default


@dataclass(frozen=True)
class Op:
    type: str
    inputs: tuple[bytes, ...]
    outputs: tuple[bytes, ...]
    attrs: dict[str, list[Field]]
    """Attribute name -> its fields other than the name."""

    @property
    def label(self) -> str:
        return self.type or "?"


@dataclass(frozen=True)
class Block:
    idx: int
    vars: dict[str, bytes]
    ops: list[Op]


@dataclass(frozen=True)
class Program:
    blocks: list[Block]
    other: list[Field] = field(default_factory=list)
    """Top-level fields besides the blocks (version, op_version_map)."""


def parse_program(data: bytes) -> Program:
    top = decode(data)
    blocks = []
    for raw_block in _bytes(top, 1):
        bf = decode(raw_block)
        variables = {}
        for raw_var in _bytes(bf, 3):
            variables[_string(decode(raw_var), 1)] = raw_var
        ops = []
        for raw_op in _bytes(bf, 4):
            of = decode(raw_op)
            attrs: dict[str, list[Field]] = {}
            for raw_attr in _bytes(of, 4):
                af = decode(raw_attr)
                attrs[_string(af, 1)] = [f for f in af if f[0] != 1]
            ops.append(Op(_string(of, 3), tuple(_bytes(of, 1)), tuple(_bytes(of, 2)), attrs))
        blocks.append(Block(_int(bf, 1), variables, ops))
    return Program(blocks, [f for f in top if f[0] != 1])


def recognizes(path: Path, head: bytes) -> bool:
    return path.name.endswith(".pdmodel") or path.name == "__model__"


def explain(a: Path, b: Path, ctx: Context) -> list[Cause]:
    if max(a.stat().st_size, b.stat().st_size) > MAX_PROGRAM_BYTES:
        return []
    try:
        pa, pb = parse_program(a.read_bytes()), parse_program(b.read_bytes())
    except WireError as exc:
        return [Cause("content", f"Paddle program: not a readable ProgramDesc protobuf ({exc})")]
    callstacks: list[str] = []
    callstack_example = ""
    other: list[str] = []
    if pa.other != pb.other:
        other.append("program version or op_version_map")
    if len(pa.blocks) != len(pb.blocks):
        other.append(f"{len(pa.blocks)} (A) vs {len(pb.blocks)} (B) blocks")
    total_ops = 0
    for ba, bb in zip(pa.blocks, pb.blocks, strict=False):
        where = f"block {ba.idx}"
        total_ops += len(ba.ops)
        var_diff = sorted(n for n in set(ba.vars) | set(bb.vars) if ba.vars.get(n) != bb.vars.get(n))
        if var_diff:
            names = examples([short(v, 40) for v in var_diff])
            other.append(f"{where}: {plural(len(var_diff), 'var')} differ ({names})")
        if [o.type for o in ba.ops] != [o.type for o in bb.ops]:
            other.append(f"{where}: ops {_op_list(ba.ops)} (A) vs {_op_list(bb.ops)} (B)")
            continue
        for i, (oa, ob) in enumerate(zip(ba.ops, bb.ops, strict=True)):
            op = f"{where} op #{i} ({oa.label})"
            if oa.inputs != ob.inputs or oa.outputs != ob.outputs:
                other.append(f"{op}: inputs/outputs")
            for name in sorted(set(oa.attrs) | set(ob.attrs)):
                va, vb = oa.attrs.get(name), ob.attrs.get(name)
                if va == vb:
                    continue
                if name == "op_callstack":
                    callstacks.append(f"#{i} {oa.label}" if ba.idx == 0 else f"{where} #{i} {oa.label}")
                    callstack_example = callstack_example or _first_change(va, vb)
                else:
                    other.append(f"{op}: attr {name} {_attr(va)} (A) vs {_attr(vb)} (B)")
    causes = []
    if callstacks:
        causes.append(Cause("paddle-op-callstack", clip(
            f"op_callstack differs in {len(callstacks)} of {plural(total_ops, 'op')} ({examples(callstacks)}), e.g. "
            f"{callstack_example} (export with a fixed script path, or strip op_callstack)")))
    if other:
        causes.append(Cause("content", clip(f"Paddle program: {'; '.join(other[:5])}"
                                            + (f"; and {len(other) - 5} more" if len(other) > 5 else ""))))
    return causes


def _op_list(ops: list[Op]) -> str:
    names = [o.label for o in ops]
    return "[" + examples(names, 6) + "]"


def _strings(fields: list[Field] | None) -> list[str]:
    return [v.decode("utf-8", "replace") for n, w, v in fields or [] if isinstance(v, bytes) and n in (5, 8, 17, 18)]


def _first_change(va: list[Field] | None, vb: list[Field] | None) -> str:
    sa, sb = _strings(va), _strings(vb)
    for x, y in zip(sa, sb, strict=False):
        if x != y:
            return f"{short(x.strip(), 100)} (A) vs {short(y.strip(), 100)} (B)"
    return f"{len(sa)} (A) vs {len(sb)} (B) frames"


def _attr(fields: list[Field] | None) -> str:
    """A short rendering of an attribute value (strings, ints, floats), for a detail line."""
    if fields is None:
        return "absent"
    shown = []
    for number, wire, value in fields:
        if number == 2:  # AttrType
            continue
        if isinstance(value, int):
            shown.append(str(value))
        elif wire == WIRE_I32 and len(value) == 4:
            shown.append(f"{struct.unpack('<f', value)[0]:g}")
        elif wire == WIRE_I64 and len(value) == 8:
            shown.append(f"{struct.unpack('<d', value)[0]:g}")
        elif number in (5, 8, 17, 18):
            shown.append(value.decode("utf-8", "replace"))
        else:
            shown.append(f"<{len(value)} bytes>")
    return cut(", ".join(shown), 60)

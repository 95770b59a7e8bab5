"""Shared helpers for the vendor decoders: a bounds-checked byte reader and fPort checks.

Every read either returns a number or raises DecodeError naming the vendor, the field and
the byte offset, so a decoder never leaks IndexError or struct.error.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection

from domain.decoders import DecodeError

# LoRaWAN reserves FPort 0 for MAC commands and 224..255 for the protocol itself
# (LoRaWAN 1.0.4 §4.3.2); application payloads only ever use 1..223.
APPLICATION_FPORTS = range(1, 224)


def check_fport(vendor: str, fport: int, allowed: Collection[int]) -> None:
    """Raise DecodeError when `fport` is not one the vendor sends measurements on."""
    if fport not in allowed:
        if isinstance(allowed, range):
            expected = f"{allowed.start}..{allowed.stop - 1}"
        else:
            expected = ", ".join(str(p) for p in sorted(allowed))
        raise DecodeError(f"{vendor}: fPort {fport} carries no measurements (expected {expected})")


_I8 = struct.Struct(">b")
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U16LE = struct.Struct("<H")
_I16LE = struct.Struct("<h")
_F32 = struct.Struct(">f")
# Runs of big-endian 16-bit words by length, made as first needed.
_U16_WORDS: dict[int, struct.Struct] = {}


class ByteReader:
    """Reads big- or little-endian integers and floats from a payload, checking bounds.

    Every uplink goes through here several times, so reads are one bounds check and one
    precompiled ``struct.unpack_from`` each."""

    def __init__(self, payload: bytes, vendor: str, base: int = 0) -> None:
        """Read `payload`; `base` is its offset inside the uplink, for error messages."""
        self.payload = bytes(payload)
        self.vendor = vendor
        self.base = base
        self.offset = 0
        self._size = len(self.payload)

    @property
    def position(self) -> int:
        """The current offset inside the whole uplink."""
        return self.base + self.offset

    @property
    def remaining(self) -> int:
        return self._size - self.offset

    def at_end(self) -> bool:
        return self.offset >= self._size

    def _truncated(self, size: int, field: str) -> DecodeError:
        return DecodeError(
            f"{self.vendor}: payload truncated in {field} at byte {self.position}: "
            f"needs {size} byte(s), {self.remaining} left"
        )

    def take(self, size: int, field: str) -> bytes:
        """The next `size` bytes; DecodeError when the payload ends first."""
        offset = self.offset
        if offset + size > self._size:
            raise self._truncated(size, field)
        self.offset = offset + size
        return self.payload[offset : offset + size]

    def _unpack(self, layout: struct.Struct, field: str):
        offset = self.offset
        end = offset + layout.size
        if end > self._size:
            raise self._truncated(layout.size, field)
        self.offset = end
        return layout.unpack_from(self.payload, offset)[0]

    def u16s(self, count: int, field: str) -> tuple[int, ...]:
        """The next `count` big-endian 16-bit words, read at once; a truncation is
        reported at the first word cut short, as "<field> word <index>"."""
        layout = _U16_WORDS.get(count) or _U16_WORDS.setdefault(count, struct.Struct(f">{count}H"))
        offset = self.offset
        end = offset + layout.size
        if end > self._size:
            whole = (self._size - offset) // 2
            self.offset = offset + 2 * whole
            raise self._truncated(2, f"{field} word {whole}")
        self.offset = end
        return layout.unpack_from(self.payload, offset)

    def u8(self, field: str) -> int:
        offset = self.offset
        if offset >= self._size:
            raise self._truncated(1, field)
        self.offset = offset + 1
        return self.payload[offset]

    def i8(self, field: str) -> int:
        return self._unpack(_I8, field)

    def u16(self, field: str) -> int:
        return self._unpack(_U16, field)

    def i16(self, field: str) -> int:
        return self._unpack(_I16, field)

    def u32(self, field: str) -> int:
        return self._unpack(_U32, field)

    def i32(self, field: str) -> int:
        return self._unpack(_I32, field)

    def u16le(self, field: str) -> int:
        return self._unpack(_U16LE, field)

    def i16le(self, field: str) -> int:
        return self._unpack(_I16LE, field)

    def f32(self, field: str) -> float:
        """An IEEE-754 single-precision float; NaN and infinity are refused."""
        start = self.position
        value = float(self._unpack(_F32, field))
        if not math.isfinite(value):
            raise DecodeError(f"{self.vendor}: {field} at byte {start} is not a finite number")
        return value

    def expect_end(self) -> None:
        """Raise DecodeError when bytes are left over after the last field."""
        if not self.at_end():
            raise DecodeError(
                f"{self.vendor}: {self.remaining} unexpected trailing byte(s) "
                f"at byte {self.position}"
            )

"""The codec sandbox: what a hostile or broken codec can do is fail its own uplink, with
a reason, within its limits; it reaches nothing outside QuickJS."""

from __future__ import annotations

import time

import pytest

from ingest.codecs.sandbox import CodecError, CompiledCodec, Limits

LIMITS = Limits(time_limit_s=0.05, memory_limit_bytes=8 * 1024 * 1024)

ECHO = """
function decodeUplink(input) {
  return {data: {first: input.bytes[0], port: input.fPort, n: input.bytes.length}};
}
"""


def decode(source: str, payload: bytes = b"\x01\x02", fport: int = 1):
    return CompiledCodec(source, LIMITS).decode(payload, fport)


def test_the_three_codec_forms_are_accepted() -> None:
    assert decode(ECHO).data == {"first": 1, "port": 1, "n": 2}
    chirpstack_v3 = "function Decode(fPort, bytes, variables) { return {p: fPort, b: bytes[1]}; }"
    assert decode(chirpstack_v3).data == {"p": 1, "b": 2}
    ttn_v2 = "function Decoder(bytes, port) { return {p: port, b: bytes[0]}; }"
    assert decode(ttn_v2).data == {"p": 1, "b": 1}


def test_warnings_are_kept_and_errors_refuse_the_uplink() -> None:
    warned = "function decodeUplink(i) { return {data: {a: 1}, warnings: ['low battery']}; }"
    assert decode(warned).warnings == ["low battery"]
    refused = "function decodeUplink(i) { return {errors: ['unknown frame type 7']}; }"
    with pytest.raises(CodecError, match="unknown frame type 7"):
        decode(refused)


HOSTILE = {
    "infinite loop": ("function decodeUplink(i) { while (true) {} }", "time limit of 50 ms"),
    "huge allocation": (
        "function decodeUplink(i) { var a = []; while (true) a.push(new Array(1e5).fill(i)); }",
        "memory limit of 8 MiB",
    ),
    "huge string": (
        "function decodeUplink(i) { var s = 'x'; while (true) s = s + s; }",
        "memory limit",
    ),
    "unbounded recursion": (
        "function f(n) { return f(n + 1) + 1; } function decodeUplink(i) { return f(0); }",
        "stack overflow",
    ),
    "throw": ("function decodeUplink(i) { throw new Error('bad byte 3'); }", "bad byte 3"),
    "require": (
        "function decodeUplink(i) { return {data: require('fs').readFileSync('/etc/passwd')}; }",
        "'require' is not defined",
    ),
    "process": (
        "function decodeUplink(i) { return {data: {env: process.env}}; }",
        "'process' is not defined",
    ),
    "fetch": ("function decodeUplink(i) { fetch('http://127.0.0.1/'); }", "'fetch' is not defined"),
    "std module": (
        "function decodeUplink(i) { return {data: {f: std.loadFile('/etc/passwd')}}; }",
        "'std' is not defined",
    ),
    "os module": ("function decodeUplink(i) { os.exec(['id']); }", "'os' is not defined"),
    "function result": (
        "function decodeUplink(i) { return {data: function () { return 1; }}; }",
        "returned nothing as its data",
    ),
    "undefined result": ("function decodeUplink(i) { }", "returned undefined, not an object"),
    "array result": ("function Decode(p, b) { return [1, 2]; }", "returned list as its data"),
    "string result": ("function decodeUplink(i) { return 'ok'; }", "returned string"),
    "cyclic result": (
        "function decodeUplink(i) { var a = {}; a.self = a; return {data: a}; }",
        "circular reference",
    ),
    "BigInt result": (
        "function decodeUplink(i) { return {data: {n: 10n}}; }",
        "bigint are forbidden",
    ),
    "JSON replaced": (
        "JSON.stringify = function () { return 'not json'; };"
        "function decodeUplink(i) { return {data: {}}; }",
        "not JSON",
    ),
    "oversized result": (
        "function decodeUplink(i) { return {data: {s: 'x'.repeat(100000)}}; }",
        "at most 65536",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_codec_fails_its_uplink_with_a_reason(name) -> None:
    source, reason = HOSTILE[name]
    started = time.monotonic()
    with pytest.raises(CodecError, match=reason.replace("(", r"\(")) as failed:
        decode(source)
    # Stopped within its limit (plus QuickJS's interrupt check interval), not later.
    assert time.monotonic() - started < 2.0
    assert str(failed.value), "the dead letter needs the reason"


def test_a_codec_without_a_decode_function_or_that_does_not_load_is_refused() -> None:
    with pytest.raises(CodecError, match="defines no decodeUplink"):
        CompiledCodec("var x = 1;", LIMITS)
    with pytest.raises(CodecError, match="failed to load: threw SyntaxError"):
        CompiledCodec("function decodeUplink(i) {", LIMITS)
    with pytest.raises(CodecError, match="failed to load: stopped at the time limit"):
        CompiledCodec("while (true) {}", LIMITS)


def test_after_a_stopped_call_the_codec_starts_afresh_and_decodes_again() -> None:
    source = """
    var hoard = [];
    function decodeUplink(input) {
      if (input.fPort === 9) { while (true) hoard.push(new Array(1e5).fill(1)); }
      return {data: {hoarded: hoard.length, b: input.bytes[0]}};
    }
    """
    codec = CompiledCodec(source, LIMITS)
    assert codec.decode(b"\x07", 1).data == {"hoarded": 0, "b": 7}
    with pytest.raises(CodecError, match="memory limit") as failed:
        codec.decode(b"\x07", 9)
    assert failed.value.at_limit
    # The heap the runaway call filled is gone with its runtime.
    assert codec.decode(b"\x08", 1).data == {"hoarded": 0, "b": 8}


def test_the_time_limit_is_per_call_not_per_codec() -> None:
    busy = """
    function decodeUplink(input) { var x = 0; for (var i = 0; i < 20000; i++) x += i;
      return {data: {x: x}}; }
    """
    codec = CompiledCodec(busy, LIMITS)
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < 0.3:  # far beyond one call's 50 ms in total
        assert codec.decode(b"", 1).data == {"x": 199990000}
        calls += 1
    assert calls > 10


def test_codecs_do_not_share_globals() -> None:
    writer = CompiledCodec(
        "var secret = 'aarhus'; function decodeUplink(i) { globalThis.leak = secret;"
        " return {data: {}}; }",
        LIMITS,
    )
    reader = CompiledCodec(
        "function decodeUplink(i) { return {data: {leak: typeof leak, s: typeof secret}}; }",
        LIMITS,
    )
    writer.decode(b"", 1)
    assert reader.decode(b"", 1).data == {"leak": "undefined", "s": "undefined"}


def test_an_oversized_source_is_refused() -> None:
    with pytest.raises(CodecError, match="at most"):
        CompiledCodec("//" + "x" * (300 * 1024) + "\nfunction decodeUplink(i) {}", LIMITS)


def test_a_dynamic_import_reaches_no_module() -> None:
    source = """
    var loaded = "nothing";
    function decodeUplink(i) {
      import("os").then(function (m) { loaded = typeof m.exec; },
                        function (e) { loaded = "refused"; });
      return {data: {loaded: loaded}};
    }
    """
    codec = CompiledCodec(source, LIMITS)
    assert codec.decode(b"", 1).data == {"loaded": "nothing"}
    # No job queue is run between uplinks either: the import never completes.
    assert codec.decode(b"", 1).data == {"loaded": "nothing"}


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("function decodeUplink(i) { return {data: {}}; }\x00 rest", "NUL character"),
        ("function decodeUplink(i) { return {data: {a: '\ud800'}}; }", "lone surrogate"),
    ],
)
def test_source_text_quickjs_cannot_take_is_refused(source, problem) -> None:
    with pytest.raises(CodecError, match=problem):
        CompiledCodec(source, LIMITS)


# One codec, many uplinks: byte 0 says what the uplink does to the codec.
MOODY = """
var calls = 0;
function decodeUplink(input) {
  calls++;
  var b = input.bytes;
  if (b[0] === 1) { while (true) {} }
  if (b[0] === 2) { throw new Error("bad byte 2"); }
  if (b[0] === 3) { return {errors: ["frame type 3 unknown"]}; }
  if (b[0] === 4) { var a = []; while (true) a.push(new Array(1e5).fill(b)); }
  if (b[0] === 5) { return {data: {big: new Array(70000).join("x")}}; }
  return {data: {value: b[1], port: input.fPort}};
}
"""


def _uplinks(*first_bytes: int) -> list[tuple[bytes, int, None, None]]:
    return [(bytes([first, n]), 10 + n, None, None) for n, first in enumerate(first_bytes)]


def test_a_batch_keeps_per_uplink_failures_that_do_not_stop_the_codec_apart() -> None:
    codec = CompiledCodec(MOODY, LIMITS)
    results = codec.decode_many(_uplinks(0, 3, 0, 5, 0))
    assert results is not None
    assert [r.data["value"] for r in (results[0], results[2], results[4])] == [0, 2, 4]
    assert isinstance(results[1], CodecError) and "frame type 3 unknown" in str(results[1])
    assert isinstance(results[3], CodecError) and "at most 65536" in str(results[3])


@pytest.mark.parametrize("hostile", [1, 2, 4], ids=["infinite loop", "throw", "memory"])
def test_a_batch_that_fails_is_given_back_to_be_decoded_alone(hostile: int) -> None:
    """Any exception (a limit, or a throw) fails the whole call, which returns None: the
    caller then decodes each uplink alone, and the codec still works afterwards."""
    codec = CompiledCodec(MOODY, LIMITS)
    started = time.monotonic()
    assert codec.decode_many(_uplinks(0, hostile, 0)) is None
    assert time.monotonic() - started < 2.0
    alone = [codec.decode(*uplink) for uplink in _uplinks(0, 0)]
    assert [d.data["value"] for d in alone] == [0, 1]
    with pytest.raises(CodecError):
        codec.decode(*_uplinks(hostile)[0])
    again = codec.decode_many(_uplinks(0, 0, 0))
    assert again is not None and [d.data["value"] for d in again] == [0, 1, 2]


def test_a_codec_that_tampers_with_json_or_arrays_cannot_swap_uplinks_results() -> None:
    """A codec may replace JSON.stringify or Array before the sandbox wraps it: the batch
    result is then not n results, and each uplink is decoded alone (None)."""
    swaps = """
    var realStringify = JSON.stringify;
    JSON.stringify = function (v) {
      if (Array.isArray(v)) { return realStringify(v.slice(0, 1)); }
      return realStringify(v);
    };
    function decodeUplink(input) { return {data: {value: input.bytes[1]}}; }
    """
    codec = CompiledCodec(swaps, LIMITS)
    assert codec.decode_many(_uplinks(0, 0, 0)) is None
    assert codec.decode(*_uplinks(0, 0)[1]).data == {"value": 1}
    garbles = """
    JSON.stringify = function (v) { return "not json"; };
    function decodeUplink(input) { return {data: {value: input.bytes[1]}}; }
    """
    assert CompiledCodec(garbles, LIMITS).decode_many(_uplinks(0, 0)) is None

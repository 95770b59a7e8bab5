"""Vendor JavaScript codecs run in a QuickJS sandbox, with a time and a memory limit.

A codec is compiled once into its own QuickJS runtime (its own heap, so the memory limit
is the codec's alone) and its decode function is then called once per uplink. The
runtime has only the ECMAScript built-ins: no ``require``, ``process``, ``fetch``,
``std``/``os`` modules, file system, network or timers, so a codec can compute and nothing
else. Every call is stopped after `time_limit_s` (QuickJS's interrupt handler checks the
clock) and every allocation beyond `memory_limit_bytes` fails inside the script; the
stack is bounded too, so unbounded recursion is an error, not a crash of ingest.

Three codec forms are accepted, as network servers accept them:

* ``decodeUplink(input)`` → ``{data, warnings, errors}`` (The Things Network's device
  repository, The Things Stack, ChirpStack v4); ``input`` is ``{bytes, fPort, recvTime,
  variables}``;
* ``Decode(fPort, bytes, variables)`` → the decoded object (ChirpStack v3);
* ``Decoder(bytes, port)`` → the decoded object (The Things Network v2).

The result crosses into Python as JSON text made inside the sandbox
(``JSON.stringify``), so nothing but plain data leaves it; a result that is not a JSON
object (a function, ``undefined``, a cycle, a BigInt) or is longer than
`max_result_bytes` is refused. Every failure raises `CodecError` with a sentence saying
what went wrong, which ingest turns into a dead letter.

`decode_many` decodes several uplinks in one call into the sandbox: the binding releases
Python's GIL on every call, and in ingest's process (three threads) each release costs a
wait to get it back, far more than the codec itself. If that call fails in any way, each
uplink is decoded again alone (by the caller), so one hostile uplink costs only itself.

QuickJS runtimes are not thread-safe: a `CompiledCodec` is used by one thread (ingest's
worker, or the request that checks an upload).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import quickjs

# Run after the codec's own source, in its runtime: finds the decode function the codec
# defines and wraps it so that input and output cross as JSON text.
_WRAPPER = r"""
(function () {
  var g = globalThis;
  var form = typeof g.decodeUplink === "function" ? "decodeUplink"
    : typeof g.Decode === "function" ? "Decode"
    : typeof g.Decoder === "function" ? "Decoder" : null;
  if (form === null) { return null; }
  var decode = g[form];
  var stringify = JSON.stringify, parse = JSON.parse, isArray = Array.isArray;
  var one = function (input) {
    var result;
    if (form === "decodeUplink") {
      result = decode({bytes: input.bytes, fPort: input.fPort, recvTime: input.recvTime,
                       variables: input.variables});
      if (result === null || typeof result !== "object" || isArray(result)) {
        return stringify({kind: "not_object", type: result === null ? "null" : typeof result});
      }
      return stringify({kind: "uplink", data: result.data, warnings: result.warnings,
                        errors: result.errors});
    }
    if (form === "Decode") {
      result = decode(input.fPort, input.bytes, input.variables);
    } else {
      result = decode(input.bytes, input.fPort);
    }
    return stringify({kind: "object", data: result});
  };
  g.__kommune_iot_decode = function (text) { return one(parse(text)); };
  // Many uplinks in one call: one crossing of the binding (which releases Python's GIL
  // on every call) instead of one per uplink. Nothing is caught here: any exception
  // stops the whole call, and Python decodes the uplinks again one at a time.
  g.__kommune_iot_decode_many = function (text) {
    var inputs = parse(text), results = new Array(inputs.length);
    for (var i = 0; i < inputs.length; i++) { results[i] = one(inputs[i]); }
    return stringify(results);
  };
  return form;
})()
"""


class CodecError(Exception):
    """The codec could not decode an uplink: the message says why (for a dead letter).

    `at_limit` is set when the codec was stopped at its time, memory or stack limit, the
    failures that cost ingest the most."""

    def __init__(self, message: str, at_limit: bool = False) -> None:
        super().__init__(message)
        self.at_limit = at_limit


@dataclass(frozen=True, slots=True)
class Limits:
    """What one codec may use: per call time, heap and stack, and result size."""

    time_limit_s: float = 0.05
    memory_limit_bytes: int = 16 * 1024 * 1024
    stack_limit_bytes: int = 256 * 1024
    max_result_bytes: int = 64 * 1024
    max_source_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class Decoded:
    """What a codec made of an uplink: its data object and its warnings."""

    data: dict[str, Any]
    warnings: list[str]


def _describe(exc: Exception, limits: Limits, during: str) -> tuple[str, bool]:
    """(sentence, stopped at a limit) for an exception out of QuickJS."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, quickjs.StackOverflow) or "stack overflow" in text:
        return f"codec {during}: stack overflow (beyond {limits.stack_limit_bytes} bytes)", True
    if "interrupted" in text:
        ms = limits.time_limit_s * 1000
        return f"codec {during}: stopped at the time limit of {ms:g} ms", True
    if "out of memory" in text:
        mib = limits.memory_limit_bytes / (1024 * 1024)
        return f"codec {during}: stopped at the memory limit of {mib:g} MiB", True
    return f"codec {during}: threw {text[:300]}", False


def _messages(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CodecError(f"codec returned {what} that is not a list")
    return [str(item)[:300] for item in value]


# What `CompiledCodec.decode_many` takes per uplink: the arguments of `decode`.
UplinkInput = tuple[bytes, int, str | None, dict[str, str] | None]


def _input(
    payload: bytes, fport: int, recv_time: str | None, variables: dict[str, str] | None
) -> dict[str, Any]:
    return {
        "bytes": list(payload),
        "fPort": fport,
        "recvTime": recv_time,
        "variables": variables or {},
    }


class CompiledCodec:
    """One codec compiled into its own sandbox; `decode` runs it on one uplink."""

    def __init__(self, source: str, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        try:
            size = len(source.encode())
        except UnicodeEncodeError:
            raise CodecError("codec source is not valid Unicode text (a lone surrogate)") from None
        if size > self.limits.max_source_bytes:
            raise CodecError(
                f"codec source is {size} bytes; at most {self.limits.max_source_bytes} are accepted"
            )
        if "\x00" in source:
            # QuickJS takes the source as a C string: it would end at the NUL.
            raise CodecError("codec source contains a NUL character")
        self._source = source
        self.form = ""
        self._context: quickjs.Context | None = None
        self._decode: Any = None
        self._decode_many: Any = None
        self._compile()

    def _compile(self) -> None:
        context = quickjs.Context()
        context.set_memory_limit(self.limits.memory_limit_bytes)
        context.set_max_stack_size(self.limits.stack_limit_bytes)
        context.set_time_limit(self.limits.time_limit_s)
        try:
            context.eval(self._source)
            form = context.eval(_WRAPPER)
        except quickjs.JSException as exc:
            message, at_limit = _describe(exc, self.limits, "failed to load")
            raise CodecError(message, at_limit) from None
        if not isinstance(form, str):
            raise CodecError(
                "codec defines no decodeUplink(input), Decode(fPort, bytes) or "
                "Decoder(bytes, port) function"
            )
        self.form = form
        self._decode = context.get("__kommune_iot_decode")
        self._decode_many = context.get("__kommune_iot_decode_many")
        self._context = context

    def decode(
        self,
        payload: bytes,
        fport: int,
        recv_time: str | None = None,
        variables: dict[str, str] | None = None,
    ) -> Decoded:
        """The codec's result for one uplink; CodecError when it fails in any way."""
        if self._decode is None:
            self._compile()  # the previous call broke the runtime: start afresh
        request = orjson.dumps(_input(payload, fport, recv_time, variables)).decode()
        try:
            text = self._decode(request)
        except quickjs.JSException as exc:
            # After a stopped call the heap may hold what the script built (a runaway
            # allocation, globals it set): the next call gets a fresh runtime.
            self._decode = self._decode_many = self._context = None
            message, at_limit = _describe(exc, self.limits, "failed")
            raise CodecError(message, at_limit) from None
        return self._result(text)

    def decode_many(self, uplinks: Sequence[UplinkInput]) -> list[Decoded | CodecError] | None:
        """Each uplink's result or the CodecError `decode` would give it, in order; None
        when the call failed, and then the caller decodes each uplink alone with `decode`.

        The uplinks go into the sandbox in one call: one release and re-acquisition of
        Python's GIL by the binding instead of one per uplink. That call has the time
        limit of one uplink, so a batch must be small enough to take a fraction of it.
        It fails as a whole when the codec throws or is stopped at its time, memory or
        stack limit on any uplink of the batch (or tampers with JSON or arrays so that the
        results cannot be told apart); the runtime is then renewed, and decoding each
        uplink alone gives each its own full limits and its own error, so one hostile
        uplink does not cost the others of the batch."""
        if self._decode_many is None:
            try:
                self._compile()
            except CodecError:
                return None
        request = orjson.dumps([_input(*uplink) for uplink in uplinks]).decode()
        try:
            text = self._decode_many(request)
        except quickjs.JSException:
            self._decode = self._decode_many = self._context = None
            return None
        try:
            texts = orjson.loads(text) if isinstance(text, str) else None
        except orjson.JSONDecodeError:
            return None
        if not isinstance(texts, list) or len(texts) != len(uplinks):
            return None
        results: list[Decoded | CodecError] = []
        for item in texts:
            try:
                results.append(self._result(item))
            except CodecError as exc:
                results.append(exc)
        return results

    def _result(self, text: Any) -> Decoded:
        if not isinstance(text, str):
            raise CodecError("codec result could not be made into JSON")
        if len(text) > self.limits.max_result_bytes:
            raise CodecError(
                f"codec result is {len(text)} characters of JSON; at most "
                f"{self.limits.max_result_bytes} are accepted"
            )
        try:
            envelope = orjson.loads(text)
        except orjson.JSONDecodeError:
            envelope = None
        if not isinstance(envelope, dict) or "kind" not in envelope:
            # The codec replaced JSON.stringify: what came back is not our envelope.
            raise CodecError("codec result is not JSON")
        if envelope["kind"] == "not_object":
            raise CodecError(f"decodeUplink returned {envelope['type']}, not an object")
        errors = _messages(envelope.get("errors"), "errors")
        if errors:
            raise CodecError("codec reported errors: " + "; ".join(errors))
        warnings = _messages(envelope.get("warnings"), "warnings")
        data = envelope.get("data")
        if not isinstance(data, dict):
            kind = "nothing" if data is None else type(data).__name__
            raise CodecError(f"codec returned {kind} as its data, not a JSON object")
        return Decoded(data=data, warnings=warnings)

"""A codec is checked against its own examples and its mapping before it is used.

Examples come as the device repository's codec YAML (``uplinkDecoder.examples``), as
JSON of the same shape, or as a bare list of examples:

    - description: temperature and humidity
      input: {fPort: 1, bytes: [0x01, 0x00, 0xe2, 0x02, 0x29]}
      output: {data: {temperature: 22.6, humidity: 41}}

An example passes when the codec's ``data`` equals the example's ``output.data`` (numbers
to 1e-9 relative), or, for an example whose output lists ``errors``, when the codec
refuses it; and when the mapping reads every field of that data: each field mapped or
ignored, each mapped value readable and inside its metric's range. A model whose network
server decodes (no codec source) is checked the same way, its examples' ``output.data``
going through the mapping only. Every example is run and reported, so staff see all that
is wrong at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from domain.metrics import METRICS
from ingest.codecs.mapping import FieldMapping, apply_mapping
from ingest.codecs.sandbox import CodecError, CompiledCodec, Limits

MAX_EXAMPLES = 100
RELATIVE_TOLERANCE = 1e-9


class ExamplesError(ValueError):
    """The examples cannot be read at all (not YAML/JSON, wrong shape)."""


@dataclass(frozen=True, slots=True)
class Example:
    description: str
    fport: int
    payload: bytes
    data: Any  # expected output.data (None when the example expects errors)
    errors: list[str]


@dataclass(slots=True)
class ExampleResult:
    index: int
    description: str
    passed: bool
    problems: list[str] = field(default_factory=list)
    values: dict[str, float | bool] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)


@dataclass(slots=True)
class CheckReport:
    passed: bool
    form: str | None  # decodeUplink | Decode | Decoder; None without a codec source
    examples: list[ExampleResult]
    problems: list[str] = field(default_factory=list)  # not about one example

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _payload(raw: Any, where: str) -> bytes:
    if isinstance(raw, str):
        try:
            return bytes.fromhex(raw.replace(" ", ""))
        except ValueError:
            raise ExamplesError(f"{where}.input.bytes: {raw[:40]!r} is not hex") from None
    if not isinstance(raw, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in raw
    ):
        raise ExamplesError(f"{where}.input.bytes must be a list of bytes (0..255) or hex")
    return bytes(raw)


def parse_examples(text: str | list | dict) -> list[Example]:
    """Examples from YAML/JSON text or an already parsed document; ExamplesError when
    they cannot be read."""
    document: Any = text
    if isinstance(text, str):
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ExamplesError(f"examples are not YAML or JSON: {exc}") from None
    if isinstance(document, Mapping):
        decoder = document.get("uplinkDecoder")
        document = decoder.get("examples") if isinstance(decoder, Mapping) else None
        if document is None:
            raise ExamplesError("no uplinkDecoder.examples in the codec definition")
    if not isinstance(document, list) or not document:
        raise ExamplesError("examples must be a non-empty list")
    if len(document) > MAX_EXAMPLES:
        raise ExamplesError(f"at most {MAX_EXAMPLES} examples")
    examples = []
    for index, item in enumerate(document):
        where = f"examples[{index}]"
        if not isinstance(item, Mapping):
            raise ExamplesError(f"{where} must be an object with input and output")
        given = item.get("input")
        output = item.get("output")
        if not isinstance(given, Mapping) or not isinstance(output, Mapping):
            raise ExamplesError(f"{where} needs input {{fPort, bytes}} and output {{data}}")
        fport = given.get("fPort")
        if not isinstance(fport, int) or isinstance(fport, bool) or not 0 <= fport <= 255:
            raise ExamplesError(f"{where}.input.fPort must be an integer 0..255")
        errors = output.get("errors") or []
        if not isinstance(errors, list):
            raise ExamplesError(f"{where}.output.errors must be a list")
        data = output.get("data")
        if data is None and not errors:
            raise ExamplesError(f"{where}.output needs data (or errors)")
        examples.append(
            Example(
                description=str(item.get("description") or "")[:300],
                fport=fport,
                payload=_payload(given.get("bytes"), where),
                data=data,
                errors=[str(e) for e in errors],
            )
        )
    return examples


def _same(expected: Any, actual: Any, path: str, out: list[str]) -> None:
    """Differences between an example's data and the codec's, as sentences."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        if expected is not actual:
            out.append(f"{path or 'data'}: expected {expected!r}, codec gave {actual!r}")
        return
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        if not math.isclose(expected, actual, rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12):
            out.append(f"{path}: expected {expected!r}, codec gave {actual!r}")
        return
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        for key in sorted(set(expected) | set(actual), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in actual:
                out.append(f"{where}: expected {expected[key]!r}, codec gave nothing")
            elif key not in expected:
                out.append(f"{where}: not in the example, codec gave {actual[key]!r}")
            else:
                _same(expected[key], actual[key], where, out)
        return
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            _same(e, a, f"{path}.{i}", out)
        return
    if expected != actual:
        out.append(f"{path or 'data'}: expected {expected!r}, codec gave {actual!r}")


def _check_mapping(mapping: FieldMapping, data: Any, result: ExampleResult) -> None:
    if not isinstance(data, Mapping):
        result.problems.append("data is not an object, so nothing can be mapped")
        return
    mapped = apply_mapping(mapping, data)
    result.values = mapped.values
    result.unmapped = mapped.unmapped
    result.problems.extend(f"mapping: {p}" for p in mapped.problems)
    if mapped.unmapped:
        result.problems.append(
            "mapping: fields neither mapped nor ignored: " + ", ".join(mapped.unmapped)
        )
    for metric, value in mapped.values.items():
        if not METRICS[metric].accepts(float(value)):
            m = METRICS[metric]
            result.problems.append(
                f"mapping: {metric}={value} is outside {m.min_value:g}..{m.max_value:g} {m.unit}"
            )


def check_codec(
    source: str | None,
    examples: list[Example],
    mapping: FieldMapping,
    limits: Limits | None = None,
) -> CheckReport:
    """Run `source` (when given) on every example and map each result; see the module."""
    codec = None
    if source is not None:
        try:
            codec = CompiledCodec(source, limits)
        except CodecError as exc:
            return CheckReport(passed=False, form=None, examples=[], problems=[str(exc)])
    results = []
    for index, example in enumerate(examples):
        result = ExampleResult(index=index, description=example.description, passed=False)
        data = example.data
        if codec is not None:
            try:
                data = codec.decode(example.payload, example.fport).data
            except CodecError as exc:
                if example.errors:
                    result.passed = True  # the example expects the codec to refuse
                else:
                    result.problems.append(str(exc))
                results.append(result)
                continue
            if example.errors:
                result.problems.append(
                    "the example expects errors (" + "; ".join(example.errors)[:200] + ") but "
                    "the codec decoded it"
                )
            else:
                _same(example.data, data, "", result.problems)
        elif example.errors:
            result.passed = True  # nothing to map: the network server refuses it
            results.append(result)
            continue
        _check_mapping(mapping, data, result)
        result.passed = not result.problems
        results.append(result)
    return CheckReport(
        passed=all(r.passed for r in results),
        form=codec.form if codec is not None else None,
        examples=results,
    )

"""A codec is checked against its own examples and its mapping before it is stored, and
every example gets its own verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.codecs.check import ExamplesError, check_codec, parse_examples
from ingest.codecs.mapping import parse_mapping
from ingest.codecs.sandbox import Limits

JS = Path(__file__).parent / "js"
ELSYS_MAPPING = parse_mapping(
    {
        "fields": {
            "temperature": "temperature_c",
            "humidity": "humidity_pct",
            "light": "light_lux",
            "motion": "motion_count",
            "co2": "co2_ppm",
            "vdd": {"metric": "battery_v", "unit": "mV"},
        }
    }
)
LIMITS = Limits(time_limit_s=0.05)


def elsys_source() -> str:
    return (JS / "elsys_ers.js").read_text()


def test_a_codec_that_meets_its_examples_passes_with_the_mapped_values() -> None:
    examples = parse_examples((JS / "elsys_ers.yaml").read_text())
    report = check_codec(elsys_source(), examples, ELSYS_MAPPING, LIMITS)
    assert report.passed and report.form == "decodeUplink"
    assert [e.passed for e in report.examples] == [True, True, True]
    assert report.examples[1].values == {"battery_v": 3.6}


def test_each_failing_example_is_reported_with_what_differs() -> None:
    examples = parse_examples(
        """
        - description: right
          input: {fPort: 5, bytes: "0100e2"}
          output: {data: {temperature: 22.6}}
        - description: wrong value
          input: {fPort: 5, bytes: "0100e3"}
          output: {data: {temperature: 22.6}}
        - description: expects an error the codec does not raise
          input: {fPort: 5, bytes: "0229"}
          output: {errors: ["bad"]}
        - description: the codec refuses it
          input: {fPort: 5, bytes: "ee"}
          output: {data: {humidity: 41}}
        """
    )
    report = check_codec(elsys_source(), examples, ELSYS_MAPPING, LIMITS)
    assert not report.passed
    verdicts = [(e.description, e.passed) for e in report.examples]
    assert verdicts == [
        ("right", True),
        ("wrong value", False),
        ("expects an error the codec does not raise", False),
        ("the codec refuses it", False),
    ]
    assert report.examples[1].problems == ["temperature: expected 22.6, codec gave 22.7"]
    assert "expects errors" in report.examples[2].problems[0]
    assert "unknown data type 0xee" in report.examples[3].problems[0]


def test_examples_fail_on_unmapped_fields_and_values_out_of_range() -> None:
    mapping = parse_mapping({"fields": {"temperature": "temperature_c"}})
    examples = parse_examples(
        """
        - input: {fPort: 5, bytes: "0100e20229"}
          output: {data: {temperature: 22.6, humidity: 41}}
        - input: {fPort: 5, bytes: "0105dc"}
          output: {data: {temperature: 150.0}}
        """
    )
    report = check_codec(elsys_source(), examples, mapping, LIMITS)
    assert not report.passed
    assert report.examples[0].unmapped == ["humidity"]
    assert "fields neither mapped nor ignored: humidity" in report.examples[0].problems[0]
    assert "temperature_c=150.0 is outside -60..125" in report.examples[1].problems[0]


def test_a_codec_that_hangs_on_an_example_fails_that_example_in_time() -> None:
    source = "function decodeUplink(i) { if (i.bytes[0] === 9) { for (;;) {} } return {data: {}}; }"
    examples = parse_examples(
        """
        - input: {fPort: 1, bytes: "01"}
          output: {data: {}}
        - input: {fPort: 1, bytes: "09"}
          output: {data: {}}
        """
    )
    report = check_codec(source, examples, parse_mapping({"ignore": ["x"]}), LIMITS)
    assert [e.passed for e in report.examples] == [True, False]
    assert "time limit" in report.examples[1].problems[0]


def test_a_codec_that_does_not_load_fails_as_a_whole() -> None:
    examples = parse_examples((JS / "elsys_ers.yaml").read_text())
    report = check_codec("function decodeUplink(", examples, ELSYS_MAPPING, LIMITS)
    assert not report.passed and "SyntaxError" in report.problems[0]


def test_a_model_the_network_server_decodes_has_its_examples_mapped_only() -> None:
    examples = parse_examples(
        [
            {"input": {"fPort": 1, "bytes": []}, "output": {"data": {"temperature": 21}}},
            {"input": {"fPort": 1, "bytes": []}, "output": {"data": {"temp": 21}}},
        ]
    )
    report = check_codec(
        None, examples, parse_mapping({"fields": {"temperature": "temperature_c"}})
    )
    assert [e.passed for e in report.examples] == [True, False]
    assert report.form is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not: [yaml", "not YAML or JSON"),
        ("[]", "non-empty list"),
        ("{}", "no uplinkDecoder.examples"),
        ("- {input: {fPort: 1, bytes: [1]}}", "needs input"),
        ("- {input: {fPort: 300, bytes: [1]}, output: {data: {}}}", "fPort must be"),
        ("- {input: {fPort: 1, bytes: [256]}, output: {data: {}}}", "list of bytes"),
        ("- {input: {fPort: 1, bytes: 'zz'}, output: {data: {}}}", "is not hex"),
        ("- {input: {fPort: 1, bytes: [1]}, output: {}}", "needs data"),
    ],
)
def test_examples_that_cannot_be_read_are_refused_with_the_reason(text, problem) -> None:
    with pytest.raises(ExamplesError, match=problem):
        parse_examples(text)

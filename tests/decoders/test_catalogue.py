"""The device catalogue and the metric documentation agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from domain.decoders import decoders, device_models
from domain.metrics import METRICS
from models.tables import SENSOR_KINDS

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("spec", device_models(), ids=lambda s: f"{s.vendor}-{s.model}")
def test_device_model_names_a_registered_decoder_kind_and_canonical_metrics(spec) -> None:
    assert spec.decoder in decoders()
    assert spec.kind in SENSOR_KINDS
    assert set(spec.meta.get("metrics", [])) <= set(METRICS)
    assert spec.meta.get("source"), "every model names the document its decoder follows"


def test_device_models_are_unique_by_vendor_and_model() -> None:
    keys = [(s.vendor, s.model) for s in device_models()]
    assert len(keys) == len(set(keys))


def test_metrics_doc_lists_every_metric_with_its_unit() -> None:
    table = (DOCS / "metrics.md").read_text(encoding="utf-8")
    rows = {
        match.group(1): match.group(2).strip()
        for match in re.finditer(r"^\|\s*`([a-z0-9_]+)`\s*\|([^|]*)\|", table, re.MULTILINE)
    }
    assert set(rows) == set(METRICS), "docs/metrics.md and domain/metrics.py differ"
    for name, metric in METRICS.items():
        assert rows[name] == metric.unit, f"{name}: doc says {rows[name]!r}, code {metric.unit!r}"


def test_decoders_doc_lists_every_device_model() -> None:
    text = (DOCS / "decoders.md").read_text(encoding="utf-8")
    for spec in device_models():
        assert f"`{spec.decoder}`" in text
        assert spec.model in text, f"{spec.vendor} {spec.model} missing from docs/decoders.md"

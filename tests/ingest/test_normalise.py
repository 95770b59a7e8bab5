"""Scalar helpers on ingest's per-message path agree with the definitions they replace."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analytics.bins import fill_level_pct
from ingest.formats._common import parse_time
from ingest.normalise import fill_level_of
from ingest.uplink import Rejected

# Physical distances, and the non-numbers a decoder could let through.
distances = st.one_of(st.floats(-1e7, 1e7), st.sampled_from([math.nan, math.inf, -math.inf]))


@given(distances, st.one_of(st.floats(-100, 0), st.floats(1, 5000)), st.floats(-100, 1000))
def test_fill_level_of_one_reading_equals_the_array_kernel(distance, depth, offset) -> None:
    expected = float(fill_level_pct(distance, depth, offset))
    got = fill_level_of(distance, depth, offset)
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
        assert 0.0 <= got <= 100.0
    assert isinstance(got, float) and not isinstance(got, np.floating)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T07:00:00.123456789Z", datetime(2026, 12, 1, 7, 0, 0, 123456, UTC)),
        ("2026-12-01T07:00:00Z", datetime(2026, 12, 1, 7, tzinfo=UTC)),
        ("2026-12-01T08:30:00.5+01:30", datetime(2026, 12, 1, 7, 0, 0, 500000, UTC)),
        ("2026-12-01T07:00:00", datetime(2026, 12, 1, 7, tzinfo=UTC)),  # naive: UTC
        (" 2026-12-01T07:00:00.1234567z ", datetime(2026, 12, 1, 7, 0, 0, 123456, UTC)),
    ],
)
def test_network_server_times_become_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text, "time")
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01T00:00:00Z", ""])
def test_unreadable_times_are_refused_with_the_field_named(text: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse_time(text, "rxInfo.nsTime")
    assert refused.value.reason == "invalid_message"
    assert "rxInfo.nsTime" in refused.value.detail

"""Decode time per uplink: a JavaScript codec in the QuickJS sandbox (compiled once, then
called per uplink, its result mapped to canonical metrics, as ingest does) against the
native Python decoder of the same model, on the vendors' dev vectors.

    .venv/bin/python bench/bench_codecs.py [--rounds 20] [--calls 500] [--batch 32]

The two run interleaved, round by round, on the same vectors (tests/codecs/js holds the
codecs, written for the tests; ../shared/vectors/lorawan-dev.json the vectors), so the
machine's drift affects both alike; reported are the medians of the per-round medians
and their ratio. With ``--mini-racer`` (needs ``pip install mini-racer``, not a
dependency) the same codec also runs in V8 through mini-racer, for the engine choice in
docs/decoders.md.

``quickjs batch`` is the same codec given `--batch` uplinks in one sandbox call
(CompiledCodec.decode_many, what ingest does with the uplinks of one read), each result
mapped; its time is per uplink. What batching saves (one release of the GIL by the
`quickjs` binding per call instead of per uplink, and the wait to get it back from
ingest's other threads) does not show in a single-threaded loop; bench/bench_ingest.py
``--js-codecs`` measures it in ingest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from domain.decoders import get_decoder  # noqa: E402
from ingest.codecs.mapping import apply_mapping, parse_mapping  # noqa: E402
from ingest.codecs.sandbox import CompiledCodec  # noqa: E402
from tests.codecs.test_differential import JS, PAIRS  # noqa: E402

VECTORS = REPO / ".." / "shared" / "vectors" / "lorawan-dev.json"


def _median_and_mean_us(
    call: Callable[[], object], calls: int, uplinks_per_call: int
) -> tuple[float, float]:
    times = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - started)
    per_uplink = 1000.0 * uplinks_per_call
    return statistics.median(times) / per_uplink, statistics.fmean(times) / per_uplink


def _mini_racer_call(source: str, payload: bytes, fport: int) -> Callable[[], object]:
    from py_mini_racer import MiniRacer

    racer = MiniRacer()
    racer.eval(source)
    racer.eval(
        "function __call(text) { var i = JSON.parse(text); var r;"
        " if (typeof decodeUplink === 'function') { r = decodeUplink(i).data; }"
        " else { r = Decode(i.fPort, i.bytes); } return JSON.stringify(r); }"
    )
    request = json.dumps({"bytes": list(payload), "fPort": fport})
    return lambda: json.loads(racer.call("__call", request, timeout_sec=0.05))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500, help="calls per vector per round")
    parser.add_argument("--batch", type=int, default=32, help="uplinks per batch call")
    parser.add_argument("--mini-racer", action="store_true")
    args = parser.parse_args()
    batch_calls = max(1, args.calls // args.batch)

    vectors = [v for v in json.loads(VECTORS.read_text()) if v["vendor"] in PAIRS]
    cases = []
    for vector in vectors:
        key, codec_file, mapping_json = PAIRS[vector["vendor"]]
        source = (JS / codec_file).read_text()
        payload, fport = bytes.fromhex(vector["payload_hex"]), vector["fPort"]
        native = get_decoder(key)
        codec = CompiledCodec(source)
        mapping = parse_mapping(mapping_json)
        calls = {
            "python": lambda native=native, p=payload, f=fport: native(p, f),
            "quickjs": lambda c=codec, m=mapping, p=payload, f=fport: apply_mapping(
                m, c.decode(p, f).data
            ),
            "quickjs batch": lambda c=codec, m=mapping, p=payload, f=fport: [
                apply_mapping(m, r.data)  # type: ignore[union-attr]
                for r in c.decode_many([(p, f, None, None)] * args.batch)  # type: ignore[union-attr]
            ],
        }
        if args.mini_racer:
            calls["mini-racer"] = _mini_racer_call(source, payload, fport)
        cases.append((f"{vector['vendor']} {vector['payload_hex']}", calls))

    per_engine: dict[str, list[float]] = {name: [] for name in cases[0][1]}
    means: dict[str, list[float]] = {name: [] for name in cases[0][1]}
    for _ in range(args.rounds):
        for engine in per_engine:
            batched = engine == "quickjs batch"
            calls_made, per_call = (batch_calls, args.batch) if batched else (args.calls, 1)
            results = [_median_and_mean_us(c[engine], calls_made, per_call) for _, c in cases]
            per_engine[engine].append(statistics.median(r[0] for r in results))
            means[engine].append(statistics.fmean(r[1] for r in results))
    python = statistics.median(per_engine["python"])
    print(
        f"vectors: {len(cases)} ({', '.join(sorted(PAIRS))}); rounds {args.rounds}; "
        f"batch {args.batch}"
    )
    for engine, medians in per_engine.items():
        median = statistics.median(medians)
        mean = statistics.median(means[engine])
        print(
            f"{engine:>13}: median {median:8.2f} µs per uplink "
            f"(rounds {min(medians):.2f}–{max(medians):.2f}), {median / python:6.1f} × python; "
            f"mean {mean:8.2f} µs"
        )


if __name__ == "__main__":
    main()

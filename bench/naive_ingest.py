"""The baseline ingest most tutorials show: one message, one INSERT, one commit.

paho on_message → json.loads → look the device up → decode → INSERT its readings →
commit. It stores the same rows as the real ingest (decoded values, derived fill level,
radio quality) so the two are compared on the same output. Used by bench_ingest.py as
the "naive" comparison; not part of the product.

    python bench/naive_ingest.py DATABASE_URL HOST PORT TOPIC
"""

from __future__ import annotations

import base64
import json
import signal
import sys

import paho.mqtt.client as mqtt
import psycopg

from analytics.bins import fill_level_pct
from domain.decoders import get_decoder
from ingest.codecs.mapping import apply_mapping, parse_mapping
from ingest.codecs.sandbox import CompiledCodec


def main(database_url: str, host: str, port: int, topic: str) -> None:
    conn = psycopg.connect(database_url)
    metric_ids = dict(conn.execute("SELECT name, id FROM metrics").fetchall())
    conn.commit()
    codecs: dict[int, tuple[CompiledCodec, object]] = {}  # model id → its newest codec

    def decode(model_id: int, decoder: str, payload: bytes, fport: int) -> dict:
        if decoder != "codec":
            return get_decoder(decoder)(payload, fport)
        if model_id not in codecs:
            script, mapping = conn.execute(
                "SELECT script, mapping FROM device_codecs WHERE device_model_id = %s "
                "ORDER BY version DESC LIMIT 1",
                (model_id,),
            ).fetchone()
            codecs[model_id] = (CompiledCodec(script), parse_mapping(mapping))
        codec, mapping = codecs[model_id]
        return apply_mapping(mapping, codec.decode(payload, fport).data).values

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            event = json.loads(msg.payload)
            sensor_id, model_id, decoder, depth_mm, offset_mm = conn.execute(
                "SELECT s.id, dm.id, dm.decoder, s.bin_depth_mm, s.mount_offset_mm FROM sensors s "
                "JOIN device_models dm ON dm.id = s.device_model_id WHERE s.dev_eui = %s",
                (event["deviceInfo"]["devEui"],),
            ).fetchone()
            values = decode(model_id, decoder, base64.b64decode(event["data"]), event["fPort"])
            # The same rows the real ingest stores: fill level and the best gateway's radio.
            if "distance_mm" in values and depth_mm:
                values["fill_pct"] = fill_level_pct(values["distance_mm"], depth_mm, offset_mm or 0)
            best = max(event["rxInfo"], key=lambda rx: rx["rssi"])
            values["rssi_dbm"], values["snr_db"] = best["rssi"], best["snr"]
            rows = [(event["time"], sensor_id, metric_ids[k], float(v)) for k, v in values.items()]
            placeholders = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
            conn.execute(
                f"INSERT INTO readings (time, sensor_id, metric_id, value) VALUES {placeholders} "
                "ON CONFLICT DO NOTHING",
                [x for r in rows for x in r],
            )
            conn.commit()
        except Exception as error:  # a tutorial prints and carries on
            conn.rollback()
            print(f"skipped message: {error}", file=sys.stderr)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-ingest")
    client.on_message = on_message
    client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *args: print("ready", flush=True)
    client.connect(host, port)
    signal.signal(signal.SIGTERM, lambda *args: client.disconnect())
    client.loop_forever()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])

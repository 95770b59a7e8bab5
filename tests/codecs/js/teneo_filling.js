// A codec written for kommune-iot's tests, reading the Teneo filling-degree layout that
// domain/decoders/teneo.py infers: battery (2.0 V + 0.1 V a step), distance in cm,
// status, then temperature and humidity; fPort 2 is a 2-byte status frame.
function Decode(fPort, bytes) {
  var battery = 2 + bytes[0] / 10;
  if (fPort === 2) {
    if (bytes.length !== 2) { throw new Error("status frame must be 2 bytes"); }
    return {battery: battery};
  }
  if ([3, 4, 8].indexOf(bytes.length) < 0) { throw new Error("frame must be 3, 4 or 8 bytes"); }
  var out = {battery: battery};
  if (bytes.length === 3 || bytes[3] === 0) { out.distance = (bytes[1] << 8) | bytes[2]; }
  if (bytes.length === 8) {
    var t = (bytes[4] << 8) | bytes[5];
    if (t & 0x8000) { t -= 0x10000; }
    out.temperature = t / 100;
    out.relativeHumidity = ((bytes[6] << 8) | bytes[7]) / 100;
  }
  return out;
}

// A codec written for kommune-iot's tests from the Elsys payload structure (the types an
// ERS / ERS CO2 sends): type byte, then a value of fixed length, big-endian.
function decodeUplink(input) {
  var b = input.bytes, data = {}, i = 0;
  function u16(at) { return (b[at] << 8) | b[at + 1]; }
  while (i < b.length) {
    var at = i, type = b[i++];
    switch (type) {
      case 0x01: var t = u16(i); if (t & 0x8000) { t -= 0x10000; } data.temperature = t / 10; i += 2; break;
      case 0x02: data.humidity = b[i]; i += 1; break;
      case 0x04: data.light = u16(i); i += 2; break;
      case 0x05: data.motion = b[i]; i += 1; break;
      case 0x06: data.co2 = u16(i); i += 2; break;
      case 0x07: data.vdd = u16(i); i += 2; break;
      case 0x3e: case 0xfe: i = b.length; break;  // settings: the rest of the frame
      default: return {errors: ["unknown data type 0x" + type.toString(16) + " at byte " + at]};
    }
    if (i > b.length) { return {errors: ["payload truncated at byte " + at]}; }
  }
  return {data: data};
}

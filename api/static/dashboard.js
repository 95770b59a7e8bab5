// Staff dashboard: reads the staff API with the key kept in sessionStorage.
"use strict";

const KEY_STORAGE = "kommune-iot-api-key";
const CO2_LIMIT_PPM = 1000;     // BR18: teaching rooms
const CO2_CRITICAL_PPM = 1400;

let map, markerLayer, routeLayer, historyChart;

function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${apiKey()}` } });
  if (response.status === 401) { signOut("Your key was refused; sign in again."); throw new Error("401"); }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function co2Class(ppm) {
  if (ppm == null) return "";
  return ppm > CO2_CRITICAL_PPM ? "bad" : ppm > CO2_LIMIT_PPM ? "warn" : "good";
}

function ago(iso) {
  if (!iso) return "never";
  const minutes = Math.round((Date.now() - new Date(iso).getTime()) / 60000);
  return minutes < 1 ? "now" : minutes < 120 ? `${minutes} min ago` : `${Math.round(minutes / 60)} h ago`;
}

function fmt(value, digits = 0) { return value == null ? "–" : Number(value).toFixed(digits); }

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderRooms(rooms) {
  const body = document.querySelector("#rooms tbody");
  body.replaceChildren();
  for (const room of rooms) {
    const tr = document.createElement("tr");
    tr.className = "clickable";
    tr.dataset.sensorId = room.id;
    tr.append(cell(room.site ?? ""), cell(room.zone ?? room.name ?? room.external_id));
    const co2 = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = `co2 ${co2Class(room.co2_ppm)}`;
    badge.textContent = fmt(room.co2_ppm);
    co2.append(badge);
    tr.append(co2, cell(fmt(room.temperature_c, 1)), cell(fmt(room.humidity_pct)), cell(ago(room.last_seen)));
    tr.addEventListener("click", () => showHistory(room, "co2_ppm"));
    body.append(tr);
  }
}

function renderBins(bins) {
  const body = document.querySelector("#bins tbody");
  body.replaceChildren();
  for (const bin of bins) {
    const tr = document.createElement("tr");
    tr.className = "clickable";
    tr.dataset.sensorId = bin.id;
    const fill = document.createElement("td");
    const bar = document.createElement("span");
    bar.className = "bar" + (bin.fill_pct >= 90 ? " full" : "");
    const inner = document.createElement("span");
    inner.style.width = `${Math.max(0, Math.min(100, bin.fill_pct ?? 0))}%`;
    bar.append(inner);
    fill.append(bar, document.createTextNode(` ${fmt(bin.fill_pct)} %`));
    tr.append(cell(bin.name ?? bin.external_id), fill, cell(ago(bin.last_seen)));
    tr.addEventListener("click", () => showHistory(bin, "fill_pct"));
    body.append(tr);
  }
}

function renderParking(zones) {
  const body = document.querySelector("#parking tbody");
  body.replaceChildren();
  for (const z of zones) {
    const tr = document.createElement("tr");
    tr.append(cell(z.zone), cell(z.occupied), cell(z.bays), cell(fmt(z.occupancy_pct)));
    body.append(tr);
  }
}

function renderAlerts(alerts) {
  const list = document.getElementById("alerts");
  list.replaceChildren();
  if (alerts.length === 0) { list.append(Object.assign(document.createElement("li"), { textContent: "No open alerts." })); return; }
  for (const a of alerts) {
    const li = document.createElement("li");
    const sev = Object.assign(document.createElement("span"), { className: `sev-${a.severity}`, textContent: a.severity });
    li.append(sev, document.createTextNode(` ${a.rule} · ${a.sensor_name ?? a.subject} · ${a.message || ""} (${a.status}, since ${ago(a.started_at)})`));
    list.append(li);
  }
}

function renderMap(sensors) {
  markerLayer.clearLayers();
  const bounds = [];
  for (const s of sensors) {
    if (s.lat == null || s.lon == null) continue;
    let color = "#777", radius = 6;
    if (s.kind === "climate") color = { good: "#2e7d32", warn: "#f9a825", bad: "#c62828" }[co2Class(s.co2_ppm)] ?? "#777";
    if (s.kind === "bin") { color = "#5d4037"; radius = 4 + (s.fill_pct ?? 0) / 10; }
    if (s.kind === "parking") color = s.occupied >= 0.5 ? "#1565c0" : "#90caf9";
    const marker = L.circleMarker([s.lat, s.lon], { radius, color, fillColor: color, fillOpacity: 0.8, weight: 1 });
    // Names are typed by staff: a text node, never HTML (Leaflet renders strings as HTML).
    const popup = document.createElement("span");
    popup.textContent = `${s.name ?? s.external_id} (${s.kind})`;
    marker.bindPopup(popup);
    marker.on("click", () => showHistory(s, { climate: "co2_ppm", bin: "fill_pct", parking: "occupied" }[s.kind] ?? "battery_v"));
    marker.addTo(markerLayer);
    bounds.push([s.lat, s.lon]);
  }
  document.getElementById("map").dataset.markers = String(bounds.length);
  if (bounds.length) map.fitBounds(bounds, { padding: [20, 20], maxZoom: 15 });
}

async function renderRoute() {
  const summary = document.getElementById("route-summary");
  const today = new Date().toISOString().slice(0, 10);
  try {
    const plan = await api(`/api/v1/staff/collection/route?date=${today}&format=geojson`);
    routeLayer.clearLayers();
    L.geoJSON(plan, { style: { color: "#6a1b9a", weight: 3 } }).addTo(routeLayer);
    const routes = (plan.features ?? []).filter((f) => f.geometry?.type === "LineString");
    const km = routes.reduce((sum, f) => sum + (f.properties?.distance_m ?? 0), 0) / 1000;
    const stops = (plan.features ?? []).filter((f) => f.geometry?.type === "Point" && f.properties?.bin_id != null).length;
    summary.textContent = routes.length ? `${routes.length} vehicle route(s), ${stops} stops, ${km.toFixed(1)} km` : "No bins need collecting today.";
  } catch (err) {
    summary.textContent = "Route planning is not available.";
  }
}

async function showHistory(sensor, metric) {
  const points = await api(`/api/v1/staff/sensors/${sensor.id}/history?metric=${metric}&hours=48`);
  document.getElementById("history-title").textContent = `${sensor.name ?? sensor.external_id} · ${metric} · last 48 h`;
  const data = points.map((p) => ({ x: new Date(p.time).getTime(), y: p.value }));
  historyChart.data.datasets[0].data = data;
  historyChart.data.datasets[0].label = metric;
  historyChart.update();
  document.getElementById("history").dataset.points = String(data.length);
}

// --- device models and their codecs --------------------------------------------------------

async function renderModels() {
  const models = await api("/api/v1/staff/device-models");
  const body = document.querySelector("#model-list tbody");
  body.replaceChildren();
  for (const model of models.filter((m) => m.own)) {
    const tr = document.createElement("tr");
    tr.append(cell(model.vendor), cell(model.model), cell(model.kind), cell(`v${model.latest_version}`));
    body.append(tr);
  }
  document.getElementById("models").dataset.own = String(body.children.length);
}

function codecBody() {
  let mapping;
  try {
    mapping = JSON.parse(document.getElementById("codec-mapping").value);
  } catch (err) {
    throw new Error(`Feltkortlægningen er ikke gyldig JSON / the mapping is not valid JSON: ${err.message}`);
  }
  const script = document.getElementById("codec-script").value;
  return {
    vendor: document.getElementById("codec-vendor").value.trim(),
    model: document.getElementById("codec-model").value.trim(),
    kind: document.getElementById("codec-kind").value,
    script: script.trim() ? script : null,
    examples: document.getElementById("codec-examples").value,
    mapping,
  };
}

function renderReport(message, passed, report) {
  const result = document.getElementById("codec-result");
  result.textContent = message;
  result.className = passed ? "ok" : "error";
  const list = document.getElementById("codec-report");
  list.replaceChildren();
  for (const example of report?.examples ?? []) {
    const li = document.createElement("li");
    li.className = example.passed ? "passed" : "failed";
    const verdict = example.passed ? "OK" : "FEJL / FAILED";
    const problems = example.problems.length ? `: ${example.problems.join("; ")}` : "";
    li.textContent = `Eksempel / example ${example.index + 1} (${example.description || "–"}): ${verdict}${problems}`;
    list.append(li);
  }
  for (const problem of report?.problems ?? []) {
    const li = document.createElement("li");
    li.className = "failed";
    li.textContent = problem;
    list.append(li);
  }
  document.getElementById("models").dataset.result = passed ? "passed" : "failed";
}

async function submitCodec(path) {
  let body;
  try {
    body = codecBody();
  } catch (err) {
    renderReport(err.message, false, null);
    return;
  }
  const response = await fetch(path, {
    method: "POST",
    headers: { Authorization: `Bearer ${apiKey()}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (response.status === 201) {
    renderReport(`Gemt som version ${answer.version} / saved as version ${answer.version}`, true, answer.report);
    await renderModels();
  } else if (response.ok) {
    const verdict = answer.passed ? "Alle eksempler bestået / every example passed" : "Ikke bestået / failed";
    renderReport(verdict, answer.passed, answer.report);
  } else {
    const detail = typeof answer.detail === "string" ? answer.detail : `HTTP ${response.status}`;
    renderReport(`Afvist / refused: ${detail}`, false, answer.report);
  }
}

document.getElementById("codec-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submitCodec("/api/v1/staff/device-models/codecs").catch(() => {});
});
document.getElementById("codec-check").addEventListener("click", () => {
  submitCodec("/api/v1/staff/device-models/codecs/check").catch(() => {});
});

async function refresh() {
  const summary = await api("/api/v1/staff/dashboard");
  renderRooms(summary.rooms);
  renderBins(summary.bins);
  renderParking(summary.parking);
  renderAlerts(summary.alerts);
  renderMap(summary.sensors);
  document.body.dataset.loaded = "true";
}

async function start() {
  const me = await api("/api/v1/staff/me");
  document.getElementById("who").textContent = `${me.municipality_name} · scopes: ${me.scopes.join(", ")}`;
  document.getElementById("login").hidden = true;
  document.getElementById("dashboard").hidden = false;
  document.getElementById("logout").hidden = false;
  if (!map) {
    map = L.map("map").setView([56.16, 10.2], 9);
    L.tileLayer(document.body.dataset.tiles || "https://tile.openstreetmap.org/{z}/{x}/{y}.png", {
      maxZoom: 19, attribution: "© OpenStreetMap contributors",
    }).addTo(map);
    markerLayer = L.layerGroup().addTo(map);
    routeLayer = L.layerGroup().addTo(map);
    historyChart = new Chart(document.getElementById("history"), {
      type: "line",
      data: { datasets: [{ label: "", data: [], pointRadius: 0, borderColor: "#1f3a5f", tension: 0.2 }] },
      options: {
        animation: false, parsing: false,
        scales: { x: { type: "linear", ticks: { callback: (v) => new Date(v).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" }) } } },
      },
    });
  }
  await refresh();
  await renderRoute();
  await renderModels().catch(() => {});
  setInterval(refresh, 30000);
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  document.getElementById("dashboard").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = message ?? "";
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORAGE, document.getElementById("api-key").value.trim());
  start().catch(() => {});
});
document.getElementById("logout").addEventListener("click", () => signOut());
if (apiKey()) start().catch(() => {});

// Staff dashboard: reads the staff API with the key kept in sessionStorage.
// Danish by default (English one click away, remembered in localStorage); numbers, dates
// and times are formatted the chosen language's way in the municipality's time zone
// (24-hour clock, decimal comma in Danish), whatever the browser's own settings.
"use strict";

const KEY_STORAGE = "kommune-iot-api-key";
const LANG_STORAGE = "kommune-iot-lang";
const CO2_LIMIT_PPM = 1000;     // BR18: teaching rooms
const CO2_CRITICAL_PPM = 1400;

const STRINGS = {
  da: {
    "logout": "Log ud",
    "lang.other": "English",
    "signin.title": "Log ind for medarbejdere",
    "signin.paste": "Indsæt kommunens API-nøgle (spørg din administrator, eller kør",
    "signin.tab": "Den gemmes kun i denne browserfane.",
    "signin.button": "Log ind",
    "signin.open": "Åbne data kræver ingen nøgle:",
    "signin.docs": "API-dokumentation",
    "signin.dcat": "DCAT-katalog",
    "signin.refused": "Nøglen blev afvist; log ind igen.",
    "map": "Kort",
    "legend.good": "CO₂ under 1000 ppm",
    "legend.bad": "over 1400 ppm",
    "legend.bin": "affaldsbeholder (størrelse = fyldning)",
    "legend.bay": "parkeringsbås",
    "rooms.title": "Klasselokaler",
    "rooms.sub": "seneste CO₂",
    "col.site": "Skole", "col.room": "Lokale", "col.rh": "RF %", "col.seen": "Set",
    "col.bin": "Beholder", "col.fill": "Fyldning", "col.zone": "Zone",
    "col.occupied": "Optaget", "col.bays": "Båse",
    "alerts.title": "Åbne alarmer",
    "alerts.none": "Ingen åbne alarmer.",
    "alerts.since": "siden",
    "bins.title": "Affaldsbeholdere",
    "bins.sub": "efter fyldning",
    "route.title": "Dagens tømningsrute",
    "route.none": "Ingen rute planlagt.",
    "route.empty": "Ingen beholdere skal tømmes i dag.",
    "route.unavailable": "Ruteplanlægning er ikke tilgængelig.",
    "route.summary": (routes, stops, km) => `${routes} rute(r), ${stops} stop, ${km} km`,
    "parking.title": "Parkering",
    "parking.sub": "belægning pr. zone",
    "history.title": "Historik",
    "history.hint": "klik på et lokale eller en beholder",
    "history.last48": "seneste 48 timer",
    "who.scopes": "rettigheder",
    "ago.never": "aldrig", "ago.now": "nu",
    "ago.min": (n) => `for ${n} min. siden`, "ago.h": (n) => `for ${n} t. siden`,
    "severity.critical": "kritisk", "severity.warning": "advarsel", "severity.info": "info",
    "status.open": "åben", "status.acknowledged": "kvitteret", "status.resolved": "løst",
    "rule.climate.co2_limit": "CO₂ over 1000 ppm",
    "rule.climate.co2_critical": "CO₂ over 1400 ppm",
    "rule.climate.temperature": "temperatur uden for komfortområdet",
    "rule.climate.humidity": "luftfugtighed uden for komfortområdet",
    "rule.bin.full": "beholder fuld",
    "rule.bin.soon_full": "beholder snart fuld",
    "rule.bin.sudden_rise": "pludselig stigning i fyldning",
    "rule.bin.fault": "fejl på fyldningsmåler",
    "rule.parking.long_stay": "langtidsparkering",
    "rule.health.stale": "ingen data",
    "rule.health.low_battery": "lavt batteri",
    "rule.health.stuck": "måleren står stille",
    "rule.health.spike": "usandsynligt udsving",
    "metric.co2_ppm": "CO₂ (ppm)", "metric.fill_pct": "fyldning (%)",
    "metric.occupied": "optaget", "metric.battery_v": "batteri (V)",
  },
  en: {
    "logout": "Log out",
    "lang.other": "Dansk",
    "signin.title": "Staff sign-in",
    "signin.paste": "Paste your municipality's API key (ask your administrator, or run",
    "signin.tab": "It stays in this browser tab only.",
    "signin.button": "Sign in",
    "signin.open": "Open data needs no key:",
    "signin.docs": "API documentation",
    "signin.dcat": "DCAT catalogue",
    "signin.refused": "Your key was refused; sign in again.",
    "map": "Map",
    "legend.good": "CO₂ below 1000 ppm",
    "legend.bad": "above 1400 ppm",
    "legend.bin": "bin (size = fill)",
    "legend.bay": "parking bay",
    "rooms.title": "Classrooms",
    "rooms.sub": "latest CO₂",
    "col.site": "Site", "col.room": "Room", "col.rh": "RH %", "col.seen": "Seen",
    "col.bin": "Bin", "col.fill": "Fill", "col.zone": "Zone",
    "col.occupied": "Occupied", "col.bays": "Bays",
    "alerts.title": "Open alerts",
    "alerts.none": "No open alerts.",
    "alerts.since": "since",
    "bins.title": "Waste bins",
    "bins.sub": "by fill level",
    "route.title": "Today's collection route",
    "route.none": "No route planned.",
    "route.empty": "No bins need collecting today.",
    "route.unavailable": "Route planning is not available.",
    "route.summary": (routes, stops, km) => `${routes} vehicle route(s), ${stops} stops, ${km} km`,
    "parking.title": "Parking",
    "parking.sub": "occupancy by zone",
    "history.title": "History",
    "history.hint": "click a room or bin",
    "history.last48": "last 48 h",
    "who.scopes": "scopes",
    "ago.never": "never", "ago.now": "now",
    "ago.min": (n) => `${n} min ago`, "ago.h": (n) => `${n} h ago`,
    "severity.critical": "critical", "severity.warning": "warning", "severity.info": "info",
    "status.open": "open", "status.acknowledged": "acknowledged", "status.resolved": "resolved",
    "rule.climate.co2_limit": "CO₂ above 1000 ppm",
    "rule.climate.co2_critical": "CO₂ above 1400 ppm",
    "rule.climate.temperature": "temperature outside the comfort band",
    "rule.climate.humidity": "humidity outside the comfort band",
    "rule.bin.full": "bin full",
    "rule.bin.soon_full": "bin full soon",
    "rule.bin.sudden_rise": "fill level jumped",
    "rule.bin.fault": "fill sensor fault",
    "rule.parking.long_stay": "long stay",
    "rule.health.stale": "no data",
    "rule.health.low_battery": "battery low",
    "rule.health.stuck": "sensor stuck",
    "rule.health.spike": "implausible spike",
    "metric.co2_ppm": "CO₂ (ppm)", "metric.fill_pct": "fill (%)",
    "metric.occupied": "occupied", "metric.battery_v": "battery (V)",
  },
};
const LOCALES = { da: "da-DK", en: "en-GB" };

let lang = localStorage.getItem(LANG_STORAGE) === "en" ? "en" : "da";
let timeZone = "Europe/Copenhagen";
let map, markerLayer, routeLayer, historyChart, lastSummary, lastHistory;

function t(key, ...args) {
  const entry = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return typeof entry === "function" ? entry(...args) : entry;
}

function applyLanguage() {
  document.documentElement.lang = lang;
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  document.getElementById("lang").textContent = t("lang.other");
}

// 24-hour clock in both languages (en-GB); Danish writes 11.13 and a decimal comma.
function timeFormat(options) {
  return new Intl.DateTimeFormat(LOCALES[lang], { timeZone, hourCycle: "h23", ...options });
}

function formatAxisTime(ms) {
  return timeFormat({ weekday: "short", hour: "2-digit", minute: "2-digit" }).format(new Date(ms));
}

function apiKey() { return sessionStorage.getItem(KEY_STORAGE); }

async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${apiKey()}` } });
  if (response.status === 401) { signOut(t("signin.refused")); throw new Error("401"); }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function co2Class(ppm) {
  if (ppm == null) return "";
  return ppm > CO2_CRITICAL_PPM ? "bad" : ppm > CO2_LIMIT_PPM ? "warn" : "good";
}

function ago(iso) {
  if (!iso) return t("ago.never");
  const minutes = Math.round((Date.now() - new Date(iso).getTime()) / 60000);
  return minutes < 1 ? t("ago.now") : minutes < 120 ? t("ago.min", minutes) : t("ago.h", Math.round(minutes / 60));
}

function fmt(value, digits = 0) {
  if (value == null) return "–";
  return new Intl.NumberFormat(LOCALES[lang], { minimumFractionDigits: digits, maximumFractionDigits: digits, useGrouping: false }).format(Number(value));
}

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
  if (alerts.length === 0) { list.append(Object.assign(document.createElement("li"), { textContent: t("alerts.none") })); return; }
  for (const a of alerts) {
    const li = document.createElement("li");
    const sev = Object.assign(document.createElement("span"), { className: `sev-${a.severity}`, textContent: t(`severity.${a.severity}`) });
    const since = timeFormat({ weekday: "short", hour: "2-digit", minute: "2-digit" }).format(new Date(a.started_at));
    li.append(sev, document.createTextNode(` ${t(`rule.${a.rule}`)} · ${a.sensor_name ?? a.subject} · ${a.message || ""} (${t(`status.${a.status}`)}, ${t("alerts.since")} ${since})`));
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
  // Today in the municipality's zone (en-CA writes dates as YYYY-MM-DD).
  const today = new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
  try {
    const plan = await api(`/api/v1/staff/collection/route?date=${today}&format=geojson`);
    routeLayer.clearLayers();
    L.geoJSON(plan, { style: { color: "#6a1b9a", weight: 3 } }).addTo(routeLayer);
    const routes = (plan.features ?? []).filter((f) => f.geometry?.type === "LineString");
    const km = routes.reduce((sum, f) => sum + (f.properties?.distance_m ?? 0), 0) / 1000;
    const stops = (plan.features ?? []).filter((f) => f.geometry?.type === "Point" && f.properties?.bin_id != null).length;
    summary.textContent = routes.length ? t("route.summary", routes.length, stops, fmt(km, 1)) : t("route.empty");
  } catch (err) {
    summary.textContent = t("route.unavailable");
  }
}

async function showHistory(sensor, metric) {
  const points = await api(`/api/v1/staff/sensors/${sensor.id}/history?metric=${metric}&hours=48`);
  lastHistory = [sensor, metric];
  const title = document.getElementById("history-title");
  title.removeAttribute("data-i18n");
  title.textContent = `${sensor.name ?? sensor.external_id} · ${t(`metric.${metric}`)} · ${t("history.last48")}`;
  const data = points.map((p) => ({ x: new Date(p.time).getTime(), y: p.value }));
  historyChart.data.datasets[0].data = data;
  historyChart.data.datasets[0].label = t(`metric.${metric}`);
  historyChart.update();
  document.getElementById("history").dataset.points = String(data.length);
}

function render(summary) {
  renderRooms(summary.rooms);
  renderBins(summary.bins);
  renderParking(summary.parking);
  renderAlerts(summary.alerts);
  renderMap(summary.sensors);
}

async function refresh() {
  lastSummary = await api("/api/v1/staff/dashboard");
  render(lastSummary);
  document.body.dataset.loaded = "true";
}

function switchLanguage() {
  lang = lang === "da" ? "en" : "da";
  localStorage.setItem(LANG_STORAGE, lang);
  applyLanguage();
  if (lastSummary) render(lastSummary);
  if (lastHistory) showHistory(...lastHistory).catch(() => {});
  if (historyChart) { historyChart.options.locale = LOCALES[lang]; historyChart.update(); }
  showWho();
}

let me;
function showWho() {
  if (me) document.getElementById("who").textContent = `${me.municipality_name} · ${t("who.scopes")}: ${me.scopes.join(", ")}`;
}

async function start() {
  me = await api("/api/v1/staff/me");
  timeZone = me.timezone ?? timeZone;
  showWho();
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
        locale: LOCALES[lang],
        scales: {
          x: { type: "linear", ticks: { callback: (v) => formatAxisTime(v) } },
          y: { ticks: { callback: (v) => fmt(v, Number.isInteger(v) ? 0 : 1) } },
        },
      },
    });
  }
  await refresh();
  await renderRoute();
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
document.getElementById("lang").addEventListener("click", switchLanguage);
applyLanguage();
if (apiKey()) start().catch(() => {});

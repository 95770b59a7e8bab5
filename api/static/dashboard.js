// Staff dashboard: reads the staff API as the person signed in through their
// municipality's identity provider (session cookie; writes echo the CSRF cookie), or with
// an API key kept in sessionStorage. Danish by default (English one click away,
// remembered in localStorage); numbers, dates and times are formatted the chosen
// language's way in the municipality's time zone (24-hour clock, decimal comma in
// Danish), whatever the browser's own settings.
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
    "signin.paste": "Eller indsæt en API-nøgle (spørg din administrator, eller kør",
    "signin.tab": "Den gemmes kun i denne browserfane.",
    "signin.button": "Log ind",
    "signin.open": "Åbne data kræver ingen nøgle:",
    "signin.docs": "API-dokumentation",
    "signin.dcat": "DCAT-katalog",
    "signin.refused": "Nøglen blev afvist; log ind igen.",
    "signin.ended": "Din session er udløbet; log ind igen.",
    "signin.sso": "Log ind med din kommunes login:",
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
    "out.title": "Notifikationer og datamodtagere",
    "out.channels": "Kanaler", "out.rules": "Regler", "out.targets": "Datamodtagere",
    "out.deliveries": "Seneste afsendelser",
    "out.col.name": "Navn", "out.col.kind": "Type", "out.col.to": "Til", "out.col.language": "Sprog",
    "out.col.on": "Til/fra", "out.col.channel": "Kanal", "out.col.alerts": "Alarmer",
    "out.col.severity": "Mindste alvor", "out.col.quiet": "Stille timer",
    "out.col.escalate": "Eskalér efter", "out.col.event": "Hændelse", "out.col.status": "Status",
    "out.col.tries": "Forsøg", "out.col.answer": "Modtagerens svar",
    "out.on": "til", "out.off": "fra", "out.all": "alle",
    "out.add.channel": "Tilføj kanal", "out.add.rule": "Tilføj regel",
    "out.ph.name": "navn", "out.ph.address": "e-mailadresser adskilt af komma, eller URL",
    "out.ph.alert": "alarmregel eller familie, fx climate.",
    "out.quiet": "stille", "out.escalate": "eskalér efter",
    "out.test": "Test", "out.delete": "Slet", "out.retry": "Prøv igen", "out.resend": "Send igen",
    "out.switch.on": "Slå til", "out.switch.off": "Slå fra",
    "out.queued.notice": (name) => `Testbesked til ${name} er sat i kø.`,
    "out.queued.delivery": (name) => `Testlevering til ${name} er sat i kø.`,
    "out.switched": (name, on) => `${name} er slået ${on ? "til" : "fra"}.`,
    "out.again": (id) => `Afsendelse ${id} sendes igen.`,
    "out.rule.deleted": "Reglen er slettet.", "out.channel.added": "Kanalen er tilføjet.",
    "out.rule.added": "Reglen er tilføjet.",
    "out.secret": (name, secret) => `Signeringsnøgle for ${name} (vises kun denne ene gang): ${secret}`,
    "out.resend.confirm": (id) => `Modtagerne har måske allerede fået e-mail ${id} (serveren bekræftede den ikke). Send den igen?`,
    "delivery.pending": "venter", "delivery.sending": "sendes", "delivery.confirming": "bekræftes",
    "delivery.delivered": "leveret", "delivery.dead": "opgivet", "delivery.unconfirmed": "ubekræftet",
  },
  en: {
    "logout": "Log out",
    "lang.other": "Dansk",
    "signin.title": "Staff sign-in",
    "signin.paste": "Or paste an API key (ask your administrator, or run",
    "signin.tab": "It stays in this browser tab only.",
    "signin.button": "Sign in",
    "signin.open": "Open data needs no key:",
    "signin.docs": "API documentation",
    "signin.dcat": "DCAT catalogue",
    "signin.refused": "Your key was refused; sign in again.",
    "signin.ended": "Your session has ended; sign in again.",
    "signin.sso": "Sign in with your municipality's login:",
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
    "out.title": "Notifications and data targets",
    "out.channels": "Channels", "out.rules": "Rules", "out.targets": "Data targets",
    "out.deliveries": "Recent deliveries",
    "out.col.name": "Name", "out.col.kind": "Kind", "out.col.to": "To", "out.col.language": "Language",
    "out.col.on": "On", "out.col.channel": "Channel", "out.col.alerts": "Alerts",
    "out.col.severity": "Least severity", "out.col.quiet": "Quiet hours",
    "out.col.escalate": "Escalate after", "out.col.event": "Event", "out.col.status": "Status",
    "out.col.tries": "Tries", "out.col.answer": "Receiver's answer",
    "out.on": "on", "out.off": "off", "out.all": "all",
    "out.add.channel": "Add channel", "out.add.rule": "Add rule",
    "out.ph.name": "name", "out.ph.address": "e-mail addresses, comma-separated, or URL",
    "out.ph.alert": "alert rule or family, e.g. climate.",
    "out.quiet": "quiet", "out.escalate": "escalate after",
    "out.test": "Test", "out.delete": "Delete", "out.retry": "Retry", "out.resend": "Resend",
    "out.switch.on": "Switch on", "out.switch.off": "Switch off",
    "out.queued.notice": (name) => `Test notice to ${name} queued.`,
    "out.queued.delivery": (name) => `Test delivery to ${name} queued.`,
    "out.switched": (name, on) => `${name} switched ${on ? "on" : "off"}.`,
    "out.again": (id) => `Delivery ${id} will be sent again.`,
    "out.rule.deleted": "Rule deleted.", "out.channel.added": "Channel added.",
    "out.rule.added": "Rule added.",
    "out.secret": (name, secret) => `Signing secret of ${name} (shown once): ${secret}`,
    "out.resend.confirm": (id) => `The recipients may have e-mail ${id} already (the server did not confirm it). Send it again?`,
    "delivery.pending": "pending", "delivery.sending": "sending", "delivery.confirming": "confirming",
    "delivery.delivered": "delivered", "delivery.dead": "dead", "delivery.unconfirmed": "unconfirmed",
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
  for (const element of document.querySelectorAll("[data-i18n-placeholder]")) element.placeholder = t(element.dataset.i18nPlaceholder);
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

function cookie(name) {
  const found = document.cookie.split("; ").find((c) => c.startsWith(`${name}=`));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

async function api(path, options = {}) {
  const headers = {};
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  else if ((options.method ?? "GET") !== "GET") headers["X-CSRF-Token"] = cookie("kiot_csrf");
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 401) {
    signOut(t(apiKey() ? "signin.refused" : "signin.ended"));
    throw new Error("401");
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

async function apiSend(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${apiKey()}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { signOut("Your key was refused; sign in again."); throw new Error("401"); }
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(typeof data?.detail === "string" ? data.detail : `HTTP ${response.status}: ${text.slice(0, 300)}`);
  return data;
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
    // Notices link to #alert-<id> (outbound/templates.py): that alert is marked and shown.
    li.id = `alert-${a.id}`;
    const sev = Object.assign(document.createElement("span"), { className: `sev-${a.severity}`, textContent: t(`severity.${a.severity}`) });
    const since = timeFormat({ weekday: "short", hour: "2-digit", minute: "2-digit" }).format(new Date(a.started_at));
    li.append(sev, document.createTextNode(` ${t(`rule.${a.rule}`)} · ${a.sensor_name ?? a.subject} · ${a.message || ""} (${t(`status.${a.status}`)}, ${t("alerts.since")} ${since})`));
    if (location.hash === `#${li.id}`) li.classList.add("focused");
    list.append(li);
  }
  const focused = list.querySelector(".focused");
  if (focused && !list.dataset.scrolled) { focused.scrollIntoView({ block: "center" }); list.dataset.scrolled = "true"; }
}

// --- notifications and data targets (docs/notifications.md) ---------------------------

function button(label, onClick) {
  const b = Object.assign(document.createElement("button"), { type: "button", textContent: label });
  b.addEventListener("click", onClick);
  return b;
}

function outboundStatus(message, isError) {
  const p = document.getElementById("outbound-status");
  p.textContent = message;
  p.className = isError ? "error" : "";
}

async function outboundAction(action, done) {
  try { await action(); outboundStatus(done, false); } catch (err) { outboundStatus(err.message, true); }
  await renderOutbound();
}

async function renderOutbound() {
  const [channels, rules, targets, deliveries] = await Promise.all([
    api("/api/v1/staff/notification-channels"),
    api("/api/v1/staff/notification-rules"),
    api("/api/v1/staff/data-targets"),
    api("/api/v1/staff/deliveries?limit=20"),
  ]);
  const names = new Map(channels.map((c) => [`c${c.id}`, c.name]).concat(targets.map((t) => [`t${t.id}`, t.name])));

  const channelBody = document.querySelector("#channels tbody");
  channelBody.replaceChildren();
  for (const c of channels) {
    const tr = document.createElement("tr");
    tr.append(cell(c.name), cell(c.kind), cell(c.kind === "email" ? c.recipients.join(", ") : c.url ?? ""), cell(c.language), cell(t(c.enabled ? "out.on" : "out.off")));
    const actions = document.createElement("td");
    actions.append(button(t("out.test"), () => outboundAction(() => apiSend("POST", `/api/v1/staff/notification-channels/${c.id}/test`), t("out.queued.notice", c.name))));
    tr.append(actions);
    channelBody.append(tr);
  }
  const select = document.getElementById("rule-channel");
  select.replaceChildren(...channels.map((c) => Object.assign(document.createElement("option"), { value: String(c.id), textContent: c.name })));

  const ruleBody = document.querySelector("#rules tbody");
  ruleBody.replaceChildren();
  for (const r of rules) {
    const tr = document.createElement("tr");
    const quiet = r.quiet_from ? `${r.quiet_from.slice(0, 5)}–${r.quiet_until.slice(0, 5)}` : "";
    tr.append(cell(names.get(`c${r.channel_id}`) ?? String(r.channel_id)), cell(r.alert_rule ?? t("out.all")), cell(t(`severity.${r.min_severity}`)), cell(quiet), cell(r.escalate_after_min ? `${r.escalate_after_min} min` : ""));
    const actions = document.createElement("td");
    actions.append(button(t("out.delete"), () => outboundAction(() => apiSend("DELETE", `/api/v1/staff/notification-rules/${r.id}`), t("out.rule.deleted"))));
    tr.append(actions);
    ruleBody.append(tr);
  }

  const targetBody = document.querySelector("#targets tbody");
  targetBody.replaceChildren();
  for (const target of targets) {
    const tr = document.createElement("tr");
    tr.append(cell(target.name), cell(target.kind), cell(target.url), cell(t(target.enabled ? "out.on" : "out.off")));
    const actions = document.createElement("td");
    actions.append(
      button(t("out.test"), () => outboundAction(() => apiSend("POST", `/api/v1/staff/data-targets/${target.id}/test`), t("out.queued.delivery", target.name))),
      button(t(target.enabled ? "out.switch.off" : "out.switch.on"), () => outboundAction(() => apiSend("PATCH", `/api/v1/staff/data-targets/${target.id}`, { enabled: !target.enabled }), t("out.switched", target.name, !target.enabled))),
    );
    tr.append(actions);
    targetBody.append(tr);
  }

  const deliveryBody = document.querySelector("#deliveries tbody");
  deliveryBody.replaceChildren();
  for (const d of deliveries) {
    const tr = document.createElement("tr");
    tr.dataset.status = d.status;
    const to = d.channel_id ? names.get(`c${d.channel_id}`) : names.get(`t${d.target_id}`);
    const answer = d.last_attempt ? `${d.last_attempt.status_code ?? ""} ${d.last_attempt.response ?? ""}`.trim() : "";
    tr.append(cell(String(d.id)), cell(d.event), cell(to ?? ""), cell(t(`delivery.${d.status}`), d.status === "dead" || d.status === "unconfirmed" ? "bad" : ""), cell(String(d.attempts)), cell(answer.slice(0, 120)));
    const actions = document.createElement("td");
    if (d.status === "dead") actions.append(button(t("out.retry"), () => outboundAction(() => apiSend("POST", `/api/v1/staff/deliveries/${d.id}/retry`), t("out.again", d.id))));
    // Unconfirmed: the e-mail may have arrived; sending it again is a person's decision.
    if (d.status === "unconfirmed") actions.append(button(t("out.resend"), () => {
      if (!window.confirm(t("out.resend.confirm", d.id))) return;
      outboundAction(() => apiSend("POST", `/api/v1/staff/deliveries/${d.id}/resend`), t("out.again", d.id));
    }));
    tr.append(actions);
    deliveryBody.append(tr);
  }
  document.getElementById("outbound").dataset.loaded = "true";
}

function formValue(id) { const v = document.getElementById(id).value.trim(); return v === "" ? null : v; }

document.getElementById("channel-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const kind = formValue("channel-kind");
  const address = formValue("channel-address") ?? "";
  const body = { name: formValue("channel-name"), kind, language: formValue("channel-language") };
  if (kind === "email") body.recipients = address.split(",").map((a) => a.trim()).filter(Boolean);
  else body.url = address;
  outboundAction(async () => {
    const created = await apiSend("POST", "/api/v1/staff/notification-channels", body);
    if (created.secret) document.getElementById("channel-secret").textContent = t("out.secret", created.name, created.secret);
  }, t("out.channel.added"));
});

document.getElementById("rule-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const escalate = formValue("rule-escalate");
  outboundAction(() => apiSend("POST", "/api/v1/staff/notification-rules", {
    channel_id: Number(formValue("rule-channel")),
    alert_rule: formValue("rule-alert"),
    min_severity: formValue("rule-severity"),
    quiet_from: formValue("rule-quiet-from"),
    quiet_until: formValue("rule-quiet-until"),
    escalate_after_min: escalate === null ? null : Number(escalate),
  }), t("out.rule.added"));
});

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
  if (document.getElementById("outbound").dataset.loaded) renderOutbound().catch((err) => outboundStatus(err.message, true));
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
  await renderOutbound().catch((err) => outboundStatus(err.message, true));
  await renderModels().catch(() => {});
  setInterval(refresh, 30000);
}

async function showProviders() {
  const response = await fetch("/auth/providers");
  const providers = response.ok ? await response.json() : [];
  const list = document.getElementById("providers");
  list.replaceChildren(...providers.map((p) => {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = p.login_url;
    link.textContent = `${p.municipality_name}: ${p.display_name}`;
    item.append(link);
    return item;
  }));
  document.getElementById("sso").hidden = providers.length === 0;
}

async function logOut() {
  if (!apiKey()) await api("/auth/logout", { method: "POST" }).catch(() => {});
  signOut();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  showProviders().catch(() => {});
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
document.getElementById("logout").addEventListener("click", () => { logOut(); });
document.getElementById("lang").addEventListener("click", switchLanguage);
applyLanguage();
if (apiKey()) {
  start().catch(() => {});
} else {
  fetch("/auth/session", { credentials: "same-origin" })
    .then((r) => (r.ok ? start() : showProviders()))
    .catch(() => showProviders());
}

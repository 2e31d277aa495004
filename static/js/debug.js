// Raw-vs-enhanced debug view: polls /debug/spectra for one participant and scrolls two
// spectrograms side by side, with the stream's quality telemetry and model.
// ?token=<server secret> (with --secret), ?room=R&identity=N preselects a participant.

const params = new URLSearchParams(location.search);
const headers = params.get("token") ? { Authorization: `Bearer ${params.get("token")}` } : {};
const state = { columns: 0, drawn: { raw: 0, enhanced: 0 }, model: null, error: null, who: null };
window.debugView = { state: () => JSON.parse(JSON.stringify(state)) };

async function getJson(path) {
  const resp = await fetch(path, { headers });
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

function colour(db) {
  // -100 dB .. -20 dB (mean bin power re full scale) -> dark blue .. yellow
  const t = Math.max(0, Math.min(1, (db + 100) / 80));
  return `rgb(${Math.round(255 * t)}, ${Math.round(220 * t)}, ${Math.round(120 * (1 - t) + 20)})`;
}

function scroll(canvas, bands, key) {
  const ctx = canvas.getContext("2d");
  const w = 3;
  ctx.drawImage(canvas, -w, 0);
  const h = canvas.height / bands.length;
  bands.forEach((db, i) => {
    ctx.fillStyle = colour(db);
    ctx.fillRect(canvas.width - w, canvas.height - (i + 1) * h, w, Math.ceil(h));
  });
  state.drawn[key] += 1;
}

function showQuality(q) {
  const table = document.getElementById("dbg-quality");
  table.replaceChildren(...Object.entries(q || {}).map(([k, v]) => {
    const tr = document.createElement("tr");
    const th = document.createElement("th");
    const td = document.createElement("td");
    th.textContent = k;
    td.textContent = String(v);
    tr.append(th, td);
    return tr;
  }));
}

async function loadRooms() {
  const data = await getJson("/debug/rooms");
  const select = document.getElementById("dbg-who");
  const options = [];
  for (const [room, people] of Object.entries(data.rooms)) {
    for (const p of people) options.push([room, p.identity]);
  }
  select.replaceChildren(...options.map(([room, identity]) => {
    const o = document.createElement("option");
    o.value = JSON.stringify([room, identity]);
    o.textContent = `${room} / ${identity}`;
    return o;
  }));
  const wanted = JSON.stringify([params.get("room"), params.get("identity")]);
  if (options.some((o) => JSON.stringify(o) === wanted)) select.value = wanted;
  return select.value ? JSON.parse(select.value) : null;
}

let since = -1;
async function tick() {
  try {
    if (!state.who) state.who = await loadRooms();
    if (state.who) {
      const [room, identity] = state.who;
      const q = new URLSearchParams({ room, identity, since: String(since) });
      const data = await getJson(`/debug/spectra?${q}`);
      for (const c of data.columns) {
        scroll(document.getElementById("dbg-raw"), c.raw, "raw");
        scroll(document.getElementById("dbg-enhanced"), c.enhanced, "enhanced");
        since = Math.max(since, c.seq);
        state.columns += 1;
      }
      state.model = data.model;
      document.getElementById("dbg-model").textContent = data.model;
      showQuality(data.quality);
      document.getElementById("dbg-status").textContent = `${room} / ${identity}`;
    }
    state.error = null;
  } catch (err) {
    state.error = String(err);
    document.getElementById("dbg-status").textContent = state.error;
  }
  setTimeout(tick, 500);  // low rate: two polls a second while the page is open
}

document.getElementById("dbg-who").addEventListener("change", (e) => {
  state.who = JSON.parse(e.target.value);
  since = -1;
});
tick();

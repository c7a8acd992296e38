// The page of `analyze serve`: the library, a track's analysis with its audio, the endless jukebox.
// Plain JavaScript and Canvas, shipped with the package; it reads this server's /v1/ API only.
"use strict";

const KEYS = ["C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B"];
const $ = (id) => document.getElementById(id);

function keyName(key, mode) {
  if (key == null || key < 0) return "–";
  return KEYS[key] + (mode === 1 ? " major" : mode === 0 ? " minor" : "");
}

function clock(seconds) {
  if (!isFinite(seconds)) return "–";
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function fixed(x, digits) {
  return x == null ? "–" : Number(x).toFixed(digits);
}

async function api(path) {
  const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (r.status === 401) {  // the login expired: the server shows the login form at /
    location.href = "/";
    throw new Error("not logged in");
  }
  if (!r.ok) {
    let message = r.statusText;
    try { message = (await r.json()).error.message; } catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = r.status;
    throw err;
  }
  return r.json();
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// --- the library -----------------------------------------------------------------------------------

const library = { rows: [], sortKey: "name", sortDir: 1, analysed: -1, timer: null };

function matches(row, words) {
  const hay = `${row.name} ${row.artist} ${row.album} ${row.path}`.toLowerCase();
  return words.every((w) => hay.includes(w));
}

function renderLibrary() {
  const words = $("search").value.toLowerCase().split(/\s+/).filter(Boolean);
  const k = library.sortKey, dir = library.sortDir;
  const rows = library.rows.filter((r) => matches(r, words)).sort((a, b) => {
    const x = a[k], y = b[k];
    if (x == null && y == null) return 0;
    if (x == null) return 1;
    if (y == null) return -1;
    return (typeof x === "string" ? x.localeCompare(y) : x - y) * dir || a.id.localeCompare(b.id);
  });
  const body = $("tracks").tBodies[0];
  body.replaceChildren(...rows.map((r) => el("tr", { "data-id": r.id },
    el("td", {}, el("a", { href: `#/track/${r.id}`, text: r.name || "(untitled)" })),
    el("td", { text: r.artist || "–" }),
    el("td", { className: "wide", text: r.album || "–" }),
    el("td", { className: "num", text: clock(r.duration_ms / 1000) }),
    el("td", { className: "num", text: fixed(r.tempo, 0) }),
    el("td", { text: keyName(r.key, r.mode) }),
    el("td", { className: "num wide", text: fixed(r.energy, 2) }),
    el("td", { className: "num wide", text: fixed(r.danceability, 2) }),
    el("td", {}, el("a", { href: `#/jukebox/${r.id}`, text: "Jukebox",
                           ariaLabel: `Endless jukebox: ${r.name}` })))));
  if (!performance.getEntriesByName("library-shown").length) performance.mark("library-shown");
  $("count").textContent = words.length ? `${rows.length} of ${plural(library.rows.length, "track")} match`
                                        : plural(library.rows.length, "track");
  for (const th of $("tracks").tHead.rows[0].cells) {
    if (!th.dataset.key) continue;
    th.setAttribute("aria-sort", th.dataset.key === k ? (dir > 0 ? "ascending" : "descending") : "none");
  }
}

async function loadTracks() {
  const body = await api("/v1/library/tracks");
  library.rows = body.items;
  renderLibrary();
}

async function pollStatus() {
  try {
    const s = await api("/v1/library/status");
    const parts = [plural(s.files, "file"), `${s.analysed} analysed`];
    if (s.pending) parts.push(`${s.pending} waiting`);
    if (s.failed) parts.push(`${s.failed} failed`);
    if (s.unavailable) parts.push(`${s.unavailable} unavailable`);  // where the server reports them
    let text = parts.join(", ");
    if (s.current) text += `; analysing ${s.current}`;
    if (s.error) text += `; ${s.error}`;
    $("status").textContent = text;
    const problems = [...s.failures, ...(s.unavailable_files || [])];
    $("failures").hidden = !problems.length;
    $("failure-list").replaceChildren(...problems.map((f) => el("li", {},
      el("code", { text: f.path }), `: ${f.reason}`)));
    if (s.analysed !== library.analysed || s.tracks !== library.rows.length) {
      library.analysed = s.analysed;
      await loadTracks();
    }
  } catch (e) {
    if (e.status === 404) {  // a server without an indexer: the list is all there is
      $("status").textContent = "";
      if (library.analysed < 0) { library.analysed = 0; await loadTracks(); }
    } else {
      $("status").textContent = `Cannot read the library: ${e.message}`;
    }
  }
}

function setupLibrary() {
  $("search").addEventListener("input", renderLibrary);
  for (const th of $("tracks").tHead.rows[0].cells) {
    if (!th.dataset.key) continue;
    th.querySelector("button").addEventListener("click", () => {
      library.sortDir = library.sortKey === th.dataset.key ? -library.sortDir : 1;
      library.sortKey = th.dataset.key;
      renderLibrary();
    });
  }
}

// --- a track -----------------------------------------------------------------------------------

const track = { id: null, doc: null, lanes: null, raf: 0, width: 0 };

// Lanes from the top, in CSS pixels: [name, height]
const LANES = [["sections", 34], ["loudness", 70], ["bars", 12], ["beats", 12], ["tatums", 10],
               ["segments", 12], ["pitch", 72], ["timbre", 72]];

function lanes() {
  const out = {};
  let y = 0;
  for (const [name, h] of LANES) { out[name] = { y, h }; y += h + 4; }
  out.height = y;
  return out;
}

function heat(v) {  // 0..1 -> a dark-to-bright colour (readable on the dark lane background)
  const t = Math.max(0, Math.min(1, v));
  return `hsl(${Math.round(240 - 200 * t)}, 85%, ${Math.round(12 + 55 * t)}%)`;
}

function sectionLabel(s) {
  return `${keyName(s.key, s.mode)} · ${s.tempo > 0 ? fixed(s.tempo, 0) : "–"} BPM · ${s.time_signature}/4`;
}

function drawTrack() {
  const doc = track.doc;
  if (!doc) return;
  const canvas = $("timeline"), overlay = $("overlay");
  const L = track.lanes = lanes();
  const w = track.width = canvas.parentElement.clientWidth;
  const dpr = window.devicePixelRatio || 1;
  for (const c of [canvas, overlay]) {
    c.width = Math.round(w * dpr);
    c.height = Math.round(L.height * dpr);
    c.style.width = `${w}px`;
    c.style.height = `${L.height}px`;
  }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  const dur = doc.track.duration;
  const x = (t) => (t / dur) * w;
  g.fillStyle = "#10131a";
  g.fillRect(0, 0, w, L.height);
  // sections: alternating bands labelled with key, tempo and meter
  g.font = "12px system-ui, sans-serif";
  g.textBaseline = "middle";
  doc.sections.forEach((s, i) => {
    const x0 = x(s.start), x1 = x(s.start + s.duration);
    g.fillStyle = i % 2 ? "#2b3a55" : "#3b4f73";
    g.fillRect(x0, L.sections.y, x1 - x0 - 1, L.sections.h);
    g.save();
    g.beginPath();
    g.rect(x0, L.sections.y, x1 - x0 - 2, L.sections.h);
    g.clip();
    g.fillStyle = "#ffffff";
    g.fillText(sectionLabel(s), x0 + 4, L.sections.y + L.sections.h / 2);
    g.restore();
  });
  // loudness: each segment's attack to its maximum and on to the next segment's start
  const lo = -60, hi = 0;
  const ly = (db) => L.loudness.y + L.loudness.h * (1 - (Math.max(lo, Math.min(hi, db)) - lo) / (hi - lo));
  g.beginPath();
  g.moveTo(0, L.loudness.y + L.loudness.h);
  for (const s of doc.segments) {
    g.lineTo(x(s.start), ly(s.loudness_start));
    g.lineTo(x(s.start + s.loudness_max_time), ly(s.loudness_max));
  }
  g.lineTo(w, L.loudness.y + L.loudness.h);
  g.closePath();
  g.fillStyle = "#5fb3f9";
  g.fill();
  // bars, beats, tatums, segments as ticks, their strength the confidence
  const ticks = (items, lane, colour) => {
    g.fillStyle = colour;
    for (const it of items) {
      const h = lane.h * (0.35 + 0.65 * Math.max(0, Math.min(1, it.confidence ?? 1)));
      g.fillRect(x(it.start), lane.y + lane.h - h, 1, h);
    }
  };
  ticks(doc.bars, L.bars, "#ffd166");
  ticks(doc.beats, L.beats, "#f4a261");
  ticks(doc.tatums, L.tatums, "#e76f51");
  ticks(doc.segments, L.segments, "#a8dadc");
  // pitch and timbre heat maps, a row per pitch class / coefficient (timbre scaled per coefficient)
  const tmin = new Array(12).fill(Infinity), tmax = new Array(12).fill(-Infinity);
  for (const s of doc.segments) for (let d = 0; d < 12; d++) {
    tmin[d] = Math.min(tmin[d], s.timbre[d]);
    tmax[d] = Math.max(tmax[d], s.timbre[d]);
  }
  for (const s of doc.segments) {
    const x0 = x(s.start), sw = Math.max(1, x(s.start + s.duration) - x0);
    for (let d = 0; d < 12; d++) {
      const ph = L.pitch.h / 12, th = L.timbre.h / 12;
      g.fillStyle = heat(s.pitches[d]);
      g.fillRect(x0, L.pitch.y + (11 - d) * ph, sw, ph);
      g.fillStyle = heat((s.timbre[d] - tmin[d]) / ((tmax[d] - tmin[d]) || 1));
      g.fillRect(x0, L.timbre.y + d * th, sw, th);
    }
  }
  // fades: shaded where the track fades in and out
  g.fillStyle = "rgba(255, 255, 255, 0.18)";
  g.fillRect(0, 0, x(doc.track.end_of_fade_in || 0), L.height);
  const fo = doc.track.start_of_fade_out ?? dur;
  g.fillRect(x(fo), 0, w - x(fo), L.height);
  canvas.dataset.drawn = String(doc.segments.length);
  if (!performance.getEntriesByName("track-drawn").length) performance.mark("track-drawn");
  $("legend").textContent = "From the top: sections (key · tempo · meter), loudness, bars, beats, tatums, " +
    "segments, pitch classes C (bottom) to B, timbre coefficients 1 (top) to 12; shaded: the fades.";
}

function current(items, t) {  // the index of the item that holds time t (binary search), or -1
  let lo = 0, hi = items.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (items[mid].start <= t) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  if (found >= 0 && t > items[found].start + items[found].duration) return -1;
  return found;
}

function drawCursor() {
  const doc = track.doc, L = track.lanes;
  if (!doc || !L) return;
  const overlay = $("overlay"), g = overlay.getContext("2d");
  const dpr = window.devicePixelRatio || 1, w = track.width;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, L.height);
  const t = $("player").currentTime || 0, dur = doc.track.duration;
  const x = (s) => (s / dur) * w;
  const mark = (items, lane, colour) => {
    const i = current(items, t);
    if (i < 0) return i;
    g.strokeStyle = colour;
    g.lineWidth = 2;
    g.strokeRect(x(items[i].start), lane.y + 1, Math.max(2, x(items[i].duration)), lane.h - 2);
    return i;
  };
  const sec = mark(doc.sections, L.sections, "#ffffff");
  const bar = mark(doc.bars, L.bars, "#ffffff");
  const beat = mark(doc.beats, L.beats, "#ffffff");
  const seg = mark(doc.segments, L.segments, "#ffffff");
  g.fillStyle = "#ff4d6d";
  g.fillRect(x(t) - 1, 0, 2, L.height);
  overlay.dataset.cursor = t.toFixed(3);
  const where = [clock(t)];
  if (sec >= 0) where.push(`section ${sec + 1} (${sectionLabel(doc.sections[sec])})`);
  if (bar >= 0) where.push(`bar ${bar + 1}`);
  if (beat >= 0) where.push(`beat ${beat + 1}`);
  if (seg >= 0) where.push(`segment ${seg + 1}`);
  $("now").textContent = where.join(" · ");
}

function cursorLoop() {
  drawCursor();
  track.raf = $("player").paused ? 0 : requestAnimationFrame(cursorLoop);
}

function seek(t) {
  const p = $("player");
  p.currentTime = Math.max(0, Math.min(track.doc.track.duration, t));
  drawCursor();
}

function renderFeatures(f, terms) {
  const names = [["tempo", 1, " BPM"], ["key", null], ["time_signature", 0, "/4"], ["loudness", 1, " dB"],
                 ["energy", 2], ["danceability", 2], ["valence", 2], ["acousticness", 2],
                 ["instrumentalness", 2], ["speechiness", 2], ["liveness", 2]];
  $("features").replaceChildren(...names.flatMap(([k, d, unit]) => [
    el("dt", { text: k.replace("_", " ") }),
    el("dd", { text: k === "key" ? keyName(f.key, f.mode) : fixed(f[k], d) + (f[k] == null ? "" : unit || "") }),
  ]));
  $("terms").replaceChildren(...(terms || []).map((t) =>
    el("li", { text: `${t.name} (${fixed(t.weight, 2)})` })));
  if (!terms || !terms.length) $("terms").replaceChildren(el("li", { text: "none in this document" }));
}

async function loadSimilar(id) {
  $("similar-box").hidden = true;
  try {
    const r = await api(`/v1/recommendations?seed_tracks=${id}&limit=8`);
    $("similar").replaceChildren(...r.tracks.map((t) => el("li", {},
      el("a", { href: `#/track/${t.id}`, text: t.name }),
      t.artists.length ? ` – ${t.artists[0].name}` : "")));
    if (!r.tracks.length) $("similar").replaceChildren(el("li", { text: "nothing the model knows" }));
    $("similar-box").hidden = false;
  } catch (e) { /* no model given to the server (404): the part stays hidden */ }
}

async function showTrack(id) {
  if (track.id !== id) {
    track.id = id;
    track.doc = null;
    $("track-title").textContent = "Loading…";
    $("timeline").dataset.drawn = "";
    const p = $("player");
    p.src = `/v1/tracks/${id}/audio`;
    const [info, doc, feats] = await Promise.all([api(`/v1/tracks/${id}`), api(`/v1/audio-analysis/${id}`),
                                                  api(`/v1/audio-features/${id}`)]);
    if (track.id !== id) return;
    track.doc = doc;
    $("track-title").textContent = info.name;
    $("track-meta").textContent = [info.artists.map((a) => a.name).join(", "), info.album.name,
                                   clock(info.duration_ms / 1000)].filter(Boolean).join(" · ");
    $("to-jukebox").href = `#/jukebox/${id}`;
    document.title = `${info.name}: analyze serve`;
    renderFeatures(feats, doc.terms);
    loadSimilar(id);
  }
  drawTrack();
  drawCursor();
}

function setupTrack() {
  const p = $("player");
  $("play").addEventListener("click", () => (p.paused ? p.play() : p.pause()));
  // marks for bench/page.py: when the first sound comes
  p.addEventListener("playing", () => {
    if (!performance.getEntriesByName("first-sound").length) performance.mark("first-sound");
  });
  p.addEventListener("play", () => { $("play").textContent = "Pause"; cancelAnimationFrame(track.raf); cursorLoop(); });
  p.addEventListener("pause", () => { $("play").textContent = "Play"; drawCursor(); });
  p.addEventListener("seeked", drawCursor);
  const canvas = $("timeline");
  canvas.addEventListener("click", (e) => {
    if (!track.doc) return;
    const r = canvas.getBoundingClientRect();
    seek(((e.clientX - r.left) / r.width) * track.doc.track.duration);
  });
  canvas.addEventListener("keydown", (e) => {
    if (!track.doc) return;
    const step = e.shiftKey ? 30 : 5;
    if (e.key === "ArrowRight") seek(p.currentTime + step);
    else if (e.key === "ArrowLeft") seek(p.currentTime - step);
    else if (e.key === "Home") seek(0);
    else if (e.key === " " || e.key === "Enter") { p.paused ? p.play() : p.pause(); }
    else return;
    e.preventDefault();
  });
  window.addEventListener("resize", () => { if (!$("view-track").hidden) { drawTrack(); drawCursor(); } });
}

// --- the endless jukebox ------------------------------------------------------------------------

const jb = {
  id: null, doc: null, near: null, br: null, pairs: [], last: -1, ctx: null, buffer: null, gain: null,
  playing: false, cur: 0, nextTime: 0, chance: 0.15, queue: [], timer: 0, raf: 0,
  jumps: 0, played: 0, nextJump: null, loadToken: 0,
};
const LOOKAHEAD_S = 0.4;  // beats are scheduled this far ahead, so a jump lands on the beat with no gap

function setThreshold(v) {
  jb.br = Jukebox.branches(jb.near, v);
  jb.last = Jukebox.lastBackward(jb.br);
  jb.pairs = Jukebox.pairs(jb.br);
  $("branches").textContent = String(jb.pairs.length);
  $("threshold-value").textContent = v.toFixed(2);
  drawCircle();
}

function circleGeometry() {
  const c = $("circle");
  const size = Math.min(c.parentElement.clientWidth, 640);
  return { c, size, r: size * 0.42, cx: size / 2, cy: size / 2 };
}

function beatAngle(i, n) {
  return -Math.PI / 2 + (2 * Math.PI * i) / n;
}

function drawCircle() {
  if (!jb.doc) return;
  const { c, size, r, cx, cy } = circleGeometry();
  const dpr = window.devicePixelRatio || 1;
  c.width = Math.round(size * dpr);
  c.height = Math.round(size * dpr);
  c.style.width = `${size}px`;
  c.style.height = `${size}px`;
  const g = c.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.fillStyle = "#10131a";
  g.fillRect(0, 0, size, size);
  const beats = jb.doc.beats, n = beats.length;
  const at = (i, rr) => [cx + rr * Math.cos(beatAngle(i, n)), cy + rr * Math.sin(beatAngle(i, n))];
  // branches: arcs pulled towards the centre
  g.lineWidth = 1;
  g.strokeStyle = "rgba(95, 179, 249, 0.45)";
  for (const { a, b } of jb.pairs) {
    const [x0, y0] = at(a + 0.5, r), [x1, y1] = at(b + 0.5, r);
    g.beginPath();
    g.moveTo(x0, y0);
    g.quadraticCurveTo(cx, cy, x1, y1);
    g.stroke();
  }
  // beats round the circle, coloured by section
  const sections = jb.doc.sections;
  for (let i = 0; i < n; i++) {
    const s = Math.max(0, current(sections, beats[i].start));
    const a0 = beatAngle(i, n), a1 = beatAngle(i + 1, n);
    g.beginPath();
    g.strokeStyle = `hsl(${(s * 67) % 360}, 70%, 60%)`;
    g.lineWidth = 14;
    g.arc(cx, cy, r, a0, a1 - 0.002);
    g.stroke();
  }
  // the next jump, and the beat playing now
  if (jb.nextJump) {
    const [x0, y0] = at(jb.nextJump.from + 0.5, r), [x1, y1] = at(jb.nextJump.to + 0.5, r);
    g.beginPath();
    g.strokeStyle = "#ff4d6d";
    g.lineWidth = 3;
    g.moveTo(x0, y0);
    g.quadraticCurveTo(cx, cy, x1, y1);
    g.stroke();
  }
  const now = playingBeat();
  if (now >= 0) {
    const [x, y] = at(now + 0.5, r);
    g.beginPath();
    g.fillStyle = "#ffffff";
    g.arc(x, y, 8, 0, 2 * Math.PI);
    g.fill();
  }
}

function playingBeat() {
  if (!jb.ctx || !jb.playing) return -1;
  const t = jb.ctx.currentTime;
  let beat = -1;
  for (const q of jb.queue) if (q.time <= t) beat = q.beat;
  return beat;
}

function schedule() {
  const ctx = jb.ctx, beats = jb.doc.beats;
  // fallen behind (a hidden tab's timers are slowed): go on from now rather than start beats in the past
  if (jb.playing && jb.nextTime < ctx.currentTime) jb.nextTime = ctx.currentTime + 0.05;
  while (jb.playing && jb.nextTime < ctx.currentTime + LOOKAHEAD_S) {
    const i = jb.cur, b = beats[i];
    const src = ctx.createBufferSource();
    src.buffer = jb.buffer;
    src.connect(jb.gain);
    src.start(jb.nextTime, b.start, b.duration);
    jb.queue.push({ beat: i, time: jb.nextTime });
    jb.nextTime += b.duration;
    const step = Jukebox.nextBeat(jb.br, i, jb.chance, Math.random, jb.last);
    if (step.jumped) {
      jb.chance = 0.15;
      jb.nextJump = { from: i, to: step.edge.to, at: jb.nextTime };
    } else {
      jb.chance = Math.min(0.5, jb.chance + 0.03);
    }
    jb.cur = step.next;
  }
  // count what has been heard; forget beats long past
  const t = ctx.currentTime;
  while (jb.queue.length > 1 && jb.queue[1].time <= t) {
    const gone = jb.queue.shift(), next = jb.queue[0];
    jb.played += 1;
    if (next.beat !== gone.beat + 1) jb.jumps += 1;
  }
  if (jb.nextJump && jb.nextJump.at <= t) jb.nextJump = null;
  $("jumps").textContent = String(jb.jumps);
  $("beats-played").textContent = String(jb.played);
}

function jbLoop() {
  if (!jb.playing) return;
  drawCircle();
  const now = playingBeat();
  $("jb-now").textContent = now >= 0 ? `beat ${now + 1} of ${jb.doc.beats.length}` : "–";
  jb.raf = requestAnimationFrame(jbLoop);
}

function jbStart() {
  if (!jb.ctx) jb.ctx = new AudioContext();
  jb.ctx.resume();
  if (!jb.gain) { jb.gain = jb.ctx.createGain(); jb.gain.connect(jb.ctx.destination); }
  jb.playing = true;
  jb.queue = [];
  jb.nextTime = jb.ctx.currentTime + 0.05;
  jb.timer = setInterval(schedule, 40);
  schedule();
  if (!performance.getEntriesByName("jukebox-first-beat").length) {
    // the first beat sounds at its scheduled time, a little after now
    const ahead_s = jb.queue[0].time - jb.ctx.currentTime;
    performance.mark("jukebox-first-beat", { startTime: performance.now() + 1000 * ahead_s });
  }
  $("jb-play").textContent = "Stop";
  jbLoop();
}

function jbStop() {
  jb.playing = false;
  clearInterval(jb.timer);
  cancelAnimationFrame(jb.raf);
  if (jb.gain) { jb.gain.disconnect(); jb.gain = null; }  // silences the beats already scheduled
  jb.queue = [];
  jb.nextJump = null;
  $("jb-play").textContent = "Play";
  drawCircle();
}

async function showJukebox(id) {
  if (jb.id === id) { drawCircle(); return; }
  jbStop();
  jb.id = id;
  const token = ++jb.loadToken;
  jb.doc = null;
  jb.buffer = null;
  jb.cur = 0; jb.jumps = 0; jb.played = 0;
  $("jb-play").disabled = true;
  $("jb-play").textContent = "Loading…";
  $("jukebox-title").textContent = "Endless jukebox";
  const [info, doc] = await Promise.all([api(`/v1/tracks/${id}`), api(`/v1/audio-analysis/${id}`)]);
  if (token !== jb.loadToken) return;
  $("jukebox-title").textContent = `Endless jukebox: ${info.name}`;
  jb.doc = doc;
  jb.near = Jukebox.candidates(doc);
  const t = Jukebox.defaultThreshold(jb.near);
  const slider = $("threshold");
  slider.min = "0";
  slider.max = String(t.max);
  slider.step = String(t.max / 200);
  slider.value = String(t.value);
  setThreshold(t.value);
  if (!jb.ctx) jb.ctx = new AudioContext();
  const bytes = await (await fetch(`/v1/tracks/${id}/audio`, { credentials: "same-origin" })).arrayBuffer();
  const buffer = await jb.ctx.decodeAudioData(bytes);
  if (token !== jb.loadToken) return;
  jb.buffer = buffer;
  $("jb-play").disabled = false;
  $("jb-play").textContent = "Play";
  if (new URLSearchParams(location.hash.split("?")[1] || "").has("play")) jbStart();
}

function setupJukebox() {
  $("jb-play").addEventListener("click", () => (jb.playing ? jbStop() : jbStart()));
  $("threshold").addEventListener("input", (e) => setThreshold(Number(e.target.value)));
  window.addEventListener("resize", () => { if (!$("view-jukebox").hidden) drawCircle(); });
}

// --- routing -----------------------------------------------------------------------------------

function route() {
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  const view = parts[0] === "track" || parts[0] === "jukebox" ? parts[0] : "library";
  const id = parts[1];
  for (const v of ["library", "track", "jukebox"]) $(`view-${v}`).hidden = v !== view;
  if (view !== "track") $("player").pause();
  if (view !== "jukebox" && jb.playing) jbStop();
  if (id) {
    $("nav-track").hidden = $("nav-jukebox").hidden = false;
    $("nav-track").href = `#/track/${id}`;
    $("nav-jukebox").href = `#/jukebox/${id}`;
  }
  for (const v of ["library", "track", "jukebox"]) {
    if (v === view) $(`nav-${v}`).setAttribute("aria-current", "page");
    else $(`nav-${v}`).removeAttribute("aria-current");
  }
  const done = view === "track" ? showTrack(id) : view === "jukebox" ? showJukebox(id) : Promise.resolve();
  done.then(() => {
    if (view === "track" && new URLSearchParams(query || "").has("play")) $("player").play();
  }).catch((e) => {
    const title = $(`${view}-title`);
    if (title) title.textContent = `Cannot show this: ${e.message}`;
  });
  if (view === "library") document.title = "Your library: analyze serve";
}

function start() {
  setupLibrary();
  setupTrack();
  setupJukebox();
  window.addEventListener("hashchange", route);
  route();
  pollStatus();
  library.timer = setInterval(pollStatus, 2000);
}

document.addEventListener("DOMContentLoaded", start);

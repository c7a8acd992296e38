// The endless jukebox's branch finder, from an analysis document's fields (our own; no network).
//
// Each beat is described by the segments that overlap it (weighted by the overlap): their 12 timbre
// coefficients, 12 pitch strengths and loudness (start and max), each dimension scaled to unit spread
// over the track.  Beats i and j are close when they sound alike in their context: i-1 like j-1, i like
// j and i+1 like j+1 (the mean of the three distances).  Then after beat i the player may go on with
// beat j+1 instead of i+1, and the join is not heard; the context keeps a jump at the same place in
// the bar (a downbeat's neighbours differ from an upbeat's).
"use strict";

(function (root) {
  const MIN_GAP_BEATS = 4;   // a jump to a near neighbour is no jump
  const NEIGHBOURS = 8;      // nearest candidates kept per beat
  const MAX_BRANCHES = 4;    // branches per beat at any threshold

  function beatFeatures(doc) {
    const beats = doc.beats || [], segs = doc.segments || [];
    const dims = 26;
    const out = [];
    let s0 = 0;
    for (const b of beats) {
      const b0 = b.start, b1 = b.start + b.duration;
      while (s0 < segs.length && segs[s0].start + segs[s0].duration <= b0) s0++;
      const v = new Float64Array(dims);
      let w = 0;
      for (let k = s0; k < segs.length && segs[k].start < b1; k++) {
        const s = segs[k];
        const ov = Math.min(b1, s.start + s.duration) - Math.max(b0, s.start);
        if (ov <= 0) continue;
        for (let d = 0; d < 12; d++) v[d] += ov * (s.timbre[d] || 0);
        for (let d = 0; d < 12; d++) v[12 + d] += ov * (s.pitches[d] || 0);
        v[24] += ov * s.loudness_start;
        v[25] += ov * s.loudness_max;
        w += ov;
      }
      if (w > 0) for (let d = 0; d < dims; d++) v[d] /= w;
      out.push(v);
    }
    // each dimension to unit spread over the track (a constant one counts for nothing)
    const n = out.length;
    for (let d = 0; d < dims && n > 1; d++) {
      let m = 0;
      for (const v of out) m += v[d];
      m /= n;
      let q = 0;
      for (const v of out) q += (v[d] - m) * (v[d] - m);
      const sd = Math.sqrt(q / n);
      for (const v of out) v[d] = sd > 1e-9 ? (v[d] - m) / sd : 0;
    }
    return out;
  }

  function dist(a, b) {
    let q = 0;
    for (let d = 0; d < a.length; d++) q += (a[d] - b[d]) * (a[d] - b[d]);
    return Math.sqrt(q / a.length);
  }

  // For every beat, its nearest other beats [{to, d}] (d: the mean distance of i-1~j-1, i~j, i+1~j+1).
  function candidates(doc) {
    const f = beatFeatures(doc);
    const n = f.length;
    const near = [];
    for (let i = 0; i < n; i++) {
      const best = [];
      if (i + 1 < n) {
        for (let j = 0; j + 1 < n; j++) {
          if (Math.abs(i - j) < MIN_GAP_BEATS) continue;
          let d = dist(f[i], f[j]) + dist(f[i + 1], f[j + 1]), k = 2;
          if (i > 0 && j > 0) { d += dist(f[i - 1], f[j - 1]); k = 3; }
          d /= k;
          if (best.length < NEIGHBOURS || d < best[best.length - 1].d) {
            best.push({ to: j, d });
            best.sort((x, y) => x.d - y.d);
            if (best.length > NEIGHBOURS) best.pop();
          }
        }
      }
      near.push(best);
    }
    return near;
  }

  // The branches at a threshold: per beat, up to MAX_BRANCHES targets j (play j+1 after i).
  function branches(near, threshold) {
    return near.map((c) => c.filter((e) => e.d <= threshold).slice(0, MAX_BRANCHES));
  }

  // A threshold that gives about a third of the beats a branch, and the slider's top.
  function defaultThreshold(near) {
    const firsts = near.filter((c) => c.length).map((c) => c[0].d).sort((a, b) => a - b);
    if (!firsts.length) return { value: 0, max: 1 };
    const value = firsts[Math.floor(firsts.length * 0.33)];
    const top = firsts[firsts.length - 1] * 1.5 || 1;
    return { value, max: Math.max(top, value * 2, 1e-3) };
  }

  // The branches as pairs of beats {a, b} (a < b), each once, whichever way it may be taken.
  function pairs(br) {
    const seen = new Map();
    br.forEach((edges, i) => {
      for (const e of edges) {
        const a = Math.min(i, e.to), b = Math.max(i, e.to);
        seen.set(`${a}:${b}`, { a, b });
      }
    });
    return [...seen.values()];
  }

  // The latest beat with a branch backwards: taken always, so that the track never ends.
  function lastBackward(br) {
    for (let i = br.length - 1; i >= 0; i--) if (br[i].some((e) => e.to < i)) return i;
    return -1;
  }

  // Which beat follows `i`: {next, jumped, edge}.  `chance` grows while no jump is taken.
  function nextBeat(br, i, chance, random, last) {
    const n = br.length;
    const edges = br[i] || [];
    const forced = i === last || i + 1 >= n;
    if (edges.length && (forced || random() < chance)) {
      const back = forced ? edges.filter((e) => e.to < i) : edges;
      const pool = back.length ? back : edges;
      const e = pool[Math.floor(random() * pool.length)];
      return { next: e.to + 1, jumped: true, edge: e };
    }
    if (i + 1 >= n) return { next: 0, jumped: false, edge: null };  // no way back: start again
    return { next: i + 1, jumped: false, edge: null };
  }

  const api = { beatFeatures, candidates, branches, pairs, defaultThreshold, lastBackward, nextBeat, MIN_GAP_BEATS };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.Jukebox = api;
})(typeof window !== "undefined" ? window : globalThis);

// Rolling history of samples kept in the browser for the charts: one shared ring of poll times
// and, per series (a node's lag, an origin's rate), a Float32Array of the same length, NaN where
// a poll had no value. Memory is fixed by the ring's length × the number of series (2,000 nodes
// × 305 polls ≈ 2.4 MB), a series not written for a whole ring is dropped, and at most
// `maxSeries` are kept (least recently written dropped first). Lost on reload: the node keeps no
// sample history of its own.
//
// Use: `begin(t)` once per poll, then `add(key, t, value)` for that poll's values.

export class RollingHistory {
  constructor({ windowMs = 15 * 60 * 1000, maxPoints = 600, maxSeries = 20000 } = {}) {
    this.windowMs = windowMs;
    this.capacity = maxPoints;
    this.maxSeries = maxSeries;
    this.times = new Float64Array(maxPoints).fill(NaN);
    this.head = -1; // slot of the current poll
    this.polls = 0; // polls begun so far
    this.series = new Map(); // key -> { values: Float32Array, lastPoll: int }, LRU order
  }

  begin(t) {
    if (this.head >= 0 && this.times[this.head] === t) return;
    this.head = (this.head + 1) % this.capacity;
    this.times[this.head] = t;
    this.polls += 1;
    for (const [key, s] of this.series) {
      if (this.polls - s.lastPoll >= this.capacity) this.series.delete(key);
      else s.values[this.head] = NaN;
    }
  }

  add(key, t, v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return;
    if (this.head < 0 || this.times[this.head] !== t) this.begin(t);
    let s = this.series.get(key);
    if (s === undefined) {
      s = { values: new Float32Array(this.capacity).fill(NaN), lastPoll: 0 };
    } else {
      this.series.delete(key); // re-insert: Map order = least recently written first
    }
    s.values[this.head] = v;
    s.lastPoll = this.polls;
    this.series.set(key, s);
    while (this.series.size > this.maxSeries) this.series.delete(this.series.keys().next().value);
  }

  // [[t, v], ...] oldest first, within the window that ends at the newest poll.
  get(key) {
    const s = this.series.get(key);
    if (s === undefined || this.head < 0) return [];
    const cutoff = this.times[this.head] - this.windowMs;
    const out = [];
    for (let i = 1; i <= this.capacity; i++) {
      const slot = (this.head + i) % this.capacity;
      const t = this.times[slot];
      const v = s.values[slot];
      if (Number.isNaN(t) || t < cutoff || Number.isNaN(v)) continue;
      out.push([t, v]);
    }
    return out;
  }

  keys() {
    return [...this.series.keys()];
  }

  // The newest value of a series within the window (a failed poll leaves a gap, not a null).
  latest(key) {
    const s = this.series.get(key);
    if (s === undefined || this.head < 0) return null;
    const cutoff = this.times[this.head] - this.windowMs;
    for (let i = 0; i < this.capacity; i++) {
      const slot = (this.head - i + this.capacity) % this.capacity;
      const t = this.times[slot];
      if (Number.isNaN(t) || t < cutoff) return null;
      if (!Number.isNaN(s.values[slot])) return s.values[slot];
    }
    return null;
  }

  size() {
    let n = 0;
    for (const key of this.series.keys()) n += this.get(key).length;
    return n;
  }
}

// Rates from monotonically growing counters (records held per origin), one sample per counter
// per poll. A counter that appears after the first poll started from 0 at the previous poll (an
// origin's first records); a counter that went down (database restored, node re-initialised)
// restarts without a sample.
export class RateTracker {
  constructor() {
    this.last = new Map(); // key -> [t, value]
    this.lastPoll = null; // time of the previous poll
  }

  // counters: {key: value} of one poll at time t; returns {key: rate per second | null}.
  rates(t, counters) {
    const out = {};
    const previousPoll = this.lastPoll;
    for (const [key, value] of Object.entries(counters)) {
      let prev = this.last.get(key);
      if (prev === undefined && previousPoll !== null) prev = [previousPoll, 0];
      this.last.set(key, [t, value]);
      out[key] = prev === undefined || t <= prev[0] || value < prev[1] ? null : ((value - prev[1]) * 1000) / (t - prev[0]);
    }
    this.lastPoll = t;
    return out;
  }
}

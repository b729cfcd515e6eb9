// Rolling history of samples kept in the browser for the charts. Bounded in time (windowMs) and
// in points per series (maxPoints) and in series (maxSeries, least recently updated dropped
// first), so a page left open for days on a network of hundreds of nodes stays small. Lost on
// reload: the node keeps no sample history of its own.

export class RollingHistory {
  constructor({ windowMs = 15 * 60 * 1000, maxPoints = 600, maxSeries = 1000 } = {}) {
    this.windowMs = windowMs;
    this.maxPoints = maxPoints;
    this.maxSeries = maxSeries;
    this.series = new Map(); // key -> [[t, v], ...] oldest first
  }

  add(key, t, v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return;
    let points = this.series.get(key);
    if (points === undefined) {
      points = [];
    } else {
      this.series.delete(key); // re-insert: Map order = least recently updated first
    }
    points.push([t, v]);
    const cutoff = t - this.windowMs;
    let drop = 0;
    while (drop < points.length && points[drop][0] < cutoff) drop++;
    drop = Math.max(drop, points.length - this.maxPoints);
    if (drop > 0) points.splice(0, drop);
    this.series.set(key, points);
    while (this.series.size > this.maxSeries) {
      this.series.delete(this.series.keys().next().value);
    }
  }

  get(key) {
    return this.series.get(key) || [];
  }

  keys() {
    return [...this.series.keys()];
  }

  latest(key) {
    const p = this.get(key);
    return p.length ? p[p.length - 1][1] : null;
  }

  size() {
    let n = 0;
    for (const p of this.series.values()) n += p.length;
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

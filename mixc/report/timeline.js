// The mixc curriculum timeline. Reads the report JSON embedded in the page and recomputes
// everything shown at the cursor with the same formulas as mixc/plan.py (lr_at,
// lr_at_token, epochs_at_token), so the page agrees with `mixc report --format json`.
// A run's page (`mixc report RUN --format html`) also carries the run's measured curves
// (mixc/report/curves.py): training loss per step and held-out bits per byte per evaluation,
// each at the plan token where its step ends.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("timeline-data").textContent);
  const REPORT = DATA.report;
  const PHASES = REPORT.phases;
  const RUNS = DATA.runs;
  const TOTAL = REPORT.total_tokens;
  const GBS = REPORT.recipe.global_batch_tokens;
  const POSITIONS = DATA.slider_positions;
  const RUN = DATA.run || null;
  const SVG = "http://www.w3.org/2000/svg";
  // Stacking order of the category charts; multilingual is the non-English part of web.
  const SEGMENTS = [
    ["web-en", "web (English)", "var(--web)"],
    ["multilingual", "multilingual web", "var(--multilingual)"],
    ["code", "code", "var(--code)"],
    ["math", "math", "var(--math)"],
    ["reasoning", "reasoning", "var(--reasoning)"],
  ];
  const CATEGORY_COLOR = { web: "var(--web)", code: "var(--code)", math: "var(--math)", reasoning: "var(--reasoning)" };
  const EXTRA_COLORS = ["#76b7b2", "#e15759", "#9c755f", "#bab0ac"];
  const PHASE_COLORS = ["#3d5a80", "#5b7fa6", "#7b6d8d", "#98c1d9", "#c9a227", "#6a994e", "#bc4749", "#386641"];
  const TOP_SOURCES = 10;
  const MARGIN = { left: 62, right: 18 };

  // ------------------------------------------------------------------ the numbers

  function clip01(x) { return Math.min(Math.max(x, 0), 1); }

  // mixc.plan.lr_at: the learning rate at a 1-based step of a run.
  function lrAt(s, step) {
    const peak = s.peak_lr, final = s.final_lr, warm = s.warmup_steps;
    let lr = peak;
    if (warm > 0 && step <= warm) lr = peak * Math.max(step, 0) / warm;
    if (s.type === "wsd") {
      if (step >= s.decay_start_step) {
        const frac = clip01((step - s.decay_start_step + 1) / Math.max(s.decay_steps, 1));
        lr = peak + (final - peak) * frac;
      }
    } else if (s.type === "cosine") {
      if (step > warm) {
        const frac = clip01((step - warm) / Math.max(s.decay_steps || 1, 1));
        lr = final + (peak - final) * 0.5 * (1 + Math.cos(Math.PI * frac));
      }
    }
    return lr;
  }

  // mixc.plan.Plan.at_token
  function phaseIndexAt(token) {
    for (let i = 0; i < PHASES.length; i++) if (token < PHASES[i].end_token) return i;
    return PHASES.length - 1;
  }

  // The step training at `token` (1-based, within the phase's run), as mixc.plan.lr_at_token.
  function stepAt(p, token) { return p.first_step + Math.floor((token - p.start_token) / GBS); }

  function lrAtToken(token) {
    const p = PHASES[phaseIndexAt(token)];
    return lrAt(p.schedule, Math.min(stepAt(p, token), p.last_step));
  }

  // mixc.plan.epochs_at_token: each source's cumulative epochs (sources of known size only),
  // including the phase that starts at `token` (its sources at 0 epochs of it).
  function epochsAtToken(token) {
    const out = new Map(), consumed = new Map();
    for (const p of PHASES) {
      if (token < p.start_token) break;
      const frac = p.tokens ? Math.min(1, (token - p.start_token) / p.tokens) : 0;
      for (const s of p.sources) {
        const before = consumed.get(s.name) || 0;
        if (s.available_tokens) out.set(s.name, { epochs: (before + frac * s.tokens) / s.available_tokens, size: s.available_tokens });
        consumed.set(s.name, before + s.tokens);
      }
    }
    return out;
  }

  // The last index of an ascending array whose value is at most `token`; -1 when there is none.
  function lastAtOrBefore(tokens, token) {
    let lo = 0, hi = tokens.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (tokens[mid] <= token) lo = mid + 1; else hi = mid;
    }
    return lo - 1;
  }

  // What the run had measured when `token` tokens were trained: the loss of the last step
  // finished by then and the last held-out evaluation by then (null before the first).
  // `since`: the evaluation at the start of the phase the latest one measured (its step's phase:
  // an evaluation at a phase's end still shows that phase's effect), as the ledger picks it: the
  // last one by the phase's first token, else the phase's first one; null when it is the latest.
  function runAtToken(token) {
    const L = RUN.loss, H = RUN.heldout;
    const i = lastAtOrBefore(L.token, token), j = lastAtOrBefore(H.token, token);
    const phase = j < 0 ? null : PHASES[phaseIndexAt(H.token[j] - 1)];
    const k = j < 0 ? -1 : Math.max(lastAtOrBefore(H.token, phase.start_token), 0);
    const evalAt = (n) => ({ step: H.step[n], token: H.token[n], mix: H.mix[n], last: n === H.token.length - 1,
      categories: Object.fromEntries(Object.entries(H.categories).map(([c, values]) => [c, values[n]])) });
    return {
      loss: i < 0 ? null : { step: L.step[i], token: L.token[i], value: L.value[i], last: i === L.token.length - 1 },
      heldout: j < 0 ? null : evalAt(j),
      since: k < 0 || k === j ? null : { ...evalAt(k), phase: phase.name },
    };
  }

  // ------------------------------------------------------------------ the x axis

  // Each run is a segment of the axis (see run_segments in html.py); tokens are linear inside.
  function xOfToken(token) {
    for (let i = 0; i < RUNS.length; i++) {
      const r = RUNS[i];
      if (token < r.end_token || i === RUNS.length - 1) {
        const f = r.end_token > r.start_token ? (token - r.start_token) / (r.end_token - r.start_token) : 0;
        return r.x0 + clip01(f) * (r.x1 - r.x0);
      }
    }
    return 1;
  }

  // The start of the step under position x in [0, 1] (the end of training at x = 1).
  function tokenOfX(x) {
    x = clip01(x);
    for (const r of RUNS) {
      if (x <= r.x1 || r === RUNS[RUNS.length - 1]) {
        const f = r.x1 > r.x0 ? clip01((x - r.x0) / (r.x1 - r.x0)) : 0;
        const token = r.start_token + f * (r.end_token - r.start_token);
        return Math.min(Math.floor(token / GBS) * GBS, TOTAL);
      }
    }
    return TOTAL;
  }

  // ------------------------------------------------------------------ formatting

  function human(n) {
    const units = [["T", 1e12], ["B", 1e9], ["M", 1e6], ["K", 1e3]];
    for (const [u, size] of units) if (Math.abs(n) >= size) return (n / size).toFixed(2) + u;
    return String(Math.round(n));
  }
  const grouped = (n) => Math.round(n).toLocaleString("en-US");
  const pct = (x, digits = 1) => (100 * x).toFixed(digits) + "%";
  const lrText = (lr) => (lr === 0 ? "0" : lr.toExponential(3).replace("e-", "e−"));
  const el = (tag, attrs = {}, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const svgEl = (tag, attrs = {}, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };

  function isLight(hex) {
    const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.55;
  }

  function segmentShares(cats) {
    return {
      "web-en": Math.max(cats.web - cats.multilingual, 0), multilingual: cats.multilingual,
      code: cats.code, math: cats.math, reasoning: cats.reasoning,
    };
  }

  // ------------------------------------------------------------------ charts

  const overview = document.getElementById("overview");
  const lrChart = document.getElementById("lr-chart");
  const areaChart = document.getElementById("area-chart");
  const lossChart = document.getElementById("loss-chart");
  const bpbChart = document.getElementById("bpb-chart");
  const slider = document.getElementById("slider");
  let width = 800;

  function plotX(x) { return MARGIN.left + x * (width - MARGIN.left - MARGIN.right); }
  function xFromPixel(px) { return (px - MARGIN.left) / (width - MARGIN.left - MARGIN.right); }

  function boundaryTicks(svg, top, bottom) {
    const seen = new Set();
    const tokens = [0, ...PHASES.map((p) => p.end_token)];
    for (const t of tokens) {
      const px = plotX(xOfToken(t));
      const key = Math.round(px);
      if (seen.has(key)) continue;
      seen.add(key);
      svg.append(svgEl("line", { class: "grid", x1: px, x2: px, y1: top, y2: bottom }));
      svg.append(svgEl("text", { x: px, y: bottom + 14, "text-anchor": "middle" }, human(t)));
    }
  }

  function runSeparators(svg, top, bottom) {
    for (const r of RUNS.slice(1)) {
      const px = plotX(r.x0);
      svg.append(svgEl("line", { class: "run-sep", x1: px, x2: px, y1: top, y2: bottom }));
    }
  }

  function cursorLine(svg, top, bottom) {
    const line = svgEl("line", { class: "cursor", y1: top, y2: bottom, x1: 0, x2: 0 });
    svg.append(line);
    return line;
  }

  function drawOverview() {
    const h = 92, top = 30, bandH = 34;
    overview.replaceChildren();
    overview.setAttribute("viewBox", `0 0 ${width} ${h}`);
    overview.setAttribute("height", h);
    RUNS.forEach((r, i) => {
      const steps = grouped(r.steps) + " steps";
      const room = plotX(r.x1) - plotX(r.x0) - 8;
      const labels = [i === 0 && RUNS.length > 1 ? `pretraining · run ${r.name} · ${steps}` : `run ${r.name} · ${steps}`,
        `run ${r.name}`, r.name, `${r.name.slice(0, Math.max(Math.floor(room / 7) - 1, 0))}…`];
      const label = labels.find((text) => text.length * 7 <= room);
      const text = svgEl("text", { class: "run-label", x: plotX(r.x0) + 4, y: 12 }, label || "");
      text.append(svgEl("title", {}, `run ${r.name}: ${steps}, ${human(r.end_token - r.start_token)} tokens`));
      overview.append(text);
    });
    PHASES.forEach((p, i) => {
      const x0 = plotX(xOfToken(p.start_token)), x1 = plotX(xOfToken(p.end_token));
      const rect = svgEl("rect", { class: "phase-rect", x: x0, y: top, width: Math.max(x1 - x0, 1), height: bandH,
        fill: PHASE_COLORS[i % PHASE_COLORS.length], "data-phase-index": i });
      rect.append(svgEl("title", {}, `${p.name}: ${human(p.start_token)} – ${human(p.end_token)} tokens`));
      rect.addEventListener("click", () => setToken(p.start_token));
      overview.append(rect);
      const name = p.stage != null ? `${p.stage} · ${p.name}` : p.name;
      if (x1 - x0 > 7 * name.length) {
        overview.append(svgEl("text", { class: "phase-label" + (isLight(PHASE_COLORS[i % PHASE_COLORS.length]) ? " dark" : ""), x: (x0 + x1) / 2, y: top + bandH / 2 + 4,
          "text-anchor": "middle", "pointer-events": "none" }, name));
      }
    });
    if (RUNS.length > 1) {
      const px = plotX(RUNS[0].x1);
      overview.append(svgEl("line", { class: "cursor", x1: px, x2: px, y1: top - 6, y2: top + bandH + 6, "stroke-dasharray": "2 2" }));
      overview.append(svgEl("text", { class: "marker-label", x: px - 4, y: top - 9, "text-anchor": "end" },
        `end of pretraining · ${human(RUNS[0].end_token)}`));
    }
    boundaryTicks(overview, top + bandH, top + bandH + 2);
    state.overviewCursor = cursorLine(overview, top - 4, top + bandH + 4);
  }

  function drawLr() {
    const h = 210, top = 10, bottom = 180;
    lrChart.replaceChildren();
    lrChart.setAttribute("viewBox", `0 0 ${width} ${h}`);
    lrChart.setAttribute("height", h);
    const maxLr = Math.max(...PHASES.map((p) => p.schedule.peak_lr)) * 1.08;
    const y = (lr) => bottom - (lr / maxLr) * (bottom - top);
    for (let k = 0; k <= 4; k++) {
      const v = (maxLr / 1.08) * k / 4;
      lrChart.append(svgEl("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(v), y2: y(v) }));
      lrChart.append(svgEl("text", { x: MARGIN.left - 6, y: y(v) + 4, "text-anchor": "end" }, lrText(v)));
    }
    boundaryTicks(lrChart, top, bottom);
    runSeparators(lrChart, top, bottom);
    // Sample each run densely plus its corners (end of warmup, start of decay) for sharp edges.
    for (const r of RUNS) {
      const tokens = new Set();
      const px0 = plotX(r.x0), px1 = plotX(r.x1);
      for (let px = px0; px <= px1; px += 1) tokens.add(tokenOfX(xFromPixel(px)));
      const first = PHASES[r.first_phase];
      const s = first.schedule;
      const corners = [0, s.warmup_steps, s.decay_start_step ? s.decay_start_step - 1 : null, r.steps - 1];
      for (const c of corners) if (c != null && c >= 0) tokens.add(r.start_token + c * GBS);
      tokens.add(r.end_token - GBS);
      const pts = [...tokens].filter((t) => t >= r.start_token && t < r.end_token).sort((a, b) => a - b)
        .map((t) => `${plotX(xOfToken(t)).toFixed(2)},${y(lrAtToken(t)).toFixed(2)}`);
      lrChart.append(svgEl("polyline", { class: "lr-line", points: pts.join(" ") }));
    }
    state.lrCursor = cursorLine(lrChart, top, bottom);
    state.lrDot = svgEl("circle", { r: 5.5, fill: "var(--accent)", stroke: "#fff", "stroke-width": 2 });
    lrChart.append(state.lrDot);
    state.lrY = y;
    lrChart.append(svgEl("text", { x: MARGIN.left - 6, y: bottom + 28, "text-anchor": "end" }, "tokens"));
  }

  function drawArea() {
    const h = 200, top = 8, bottom = 170;
    areaChart.replaceChildren();
    areaChart.setAttribute("viewBox", `0 0 ${width} ${h}`);
    areaChart.setAttribute("height", h);
    const y = (f) => bottom - f * (bottom - top);
    PHASES.forEach((p) => {
      const x0 = plotX(xOfToken(p.start_token)), x1 = plotX(xOfToken(p.end_token));
      const shares = segmentShares(p.categories);
      let acc = 0;
      for (const [key, label, color] of SEGMENTS) {
        const v = shares[key];
        if (v <= 0) continue;
        const rect = svgEl("rect", { x: x0, width: Math.max(x1 - x0, 1), y: y(acc + v), height: y(acc) - y(acc + v), fill: color });
        rect.append(svgEl("title", {}, `${p.name}: ${label} ${pct(v)}`));
        areaChart.append(rect);
        acc += v;
      }
    });
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      areaChart.append(svgEl("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: y(f), y2: y(f), opacity: 0.6 }));
      areaChart.append(svgEl("text", { x: MARGIN.left - 6, y: y(f) + 4, "text-anchor": "end" }, pct(f, 0)));
    }
    boundaryTicks(areaChart, bottom, bottom + 2);
    runSeparators(areaChart, top, bottom);
    state.areaCursor = cursorLine(areaChart, top - 4, bottom + 4);
    const legend = document.getElementById("area-legend");
    legend.replaceChildren(...SEGMENTS.map(([, label, color]) => {
      const li = el("li");
      li.append(el("span", { class: "swatch", style: `background:${color}` }), document.createTextNode(label));
      return li;
    }));
  }

  // ------------------------------------------------------------------ the run's curves

  const bpbText = (v) => (v == null ? "–" : v.toFixed(4));

  function categoryColor(cat) {
    if (cat === "multilingual") return "var(--multilingual)";
    if (CATEGORY_COLOR[cat]) return CATEGORY_COLOR[cat];
    const others = Object.keys(RUN.heldout.categories).filter((c) => !CATEGORY_COLOR[c] && c !== "multilingual");
    return EXTRA_COLORS[others.indexOf(cat) % EXTRA_COLORS.length];
  }

  // A y axis over the finite values (no spread: a long run has more points than a call takes).
  function valueScale(columns, top, bottom) {
    let lo = Infinity, hi = -Infinity;
    for (const values of columns) for (const v of values) if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (lo > hi) { lo = 0; hi = 1; }
    const pad = hi > lo ? (hi - lo) * 0.08 : Math.max(Math.abs(hi) * 0.05, 0.05);
    lo -= pad; hi += pad;
    return { lo, hi, y: (v) => bottom - ((v - lo) / (hi - lo)) * (bottom - top) };
  }

  function valueGrid(svg, scale, digits) {
    for (let k = 0; k <= 4; k++) {
      const v = scale.lo + ((scale.hi - scale.lo) * k) / 4;
      svg.append(svgEl("line", { class: "grid", x1: MARGIN.left, x2: width - MARGIN.right, y1: scale.y(v), y2: scale.y(v), opacity: 0.6 }));
      svg.append(svgEl("text", { x: MARGIN.left - 6, y: scale.y(v) + 4, "text-anchor": "end" }, v.toFixed(digits)));
    }
  }

  // One polyline per stretch of known values (a missing value breaks the line).
  function seriesLines(svg, tokens, values, y, attrs) {
    let pts = [];
    const flush = () => { if (pts.length) svg.append(svgEl("polyline", { ...attrs, points: pts.join(" ") })); pts = []; };
    tokens.forEach((t, i) => {
      if (values[i] == null) { flush(); return; }
      pts.push(`${plotX(xOfToken(t)).toFixed(2)},${y(values[i]).toFixed(2)}`);
    });
    flush();
  }

  function drawRunCharts() {
    const L = RUN.loss, H = RUN.heldout;
    let h = 190, top = 10, bottom = 160;
    lossChart.replaceChildren();
    lossChart.setAttribute("viewBox", `0 0 ${width} ${h}`);
    lossChart.setAttribute("height", h);
    const loss = valueScale([L.value], top, bottom);
    valueGrid(lossChart, loss, 2);
    boundaryTicks(lossChart, top, bottom);
    runSeparators(lossChart, top, bottom);
    seriesLines(lossChart, L.token, L.value, loss.y, { class: "loss-line" });
    lossChart.append(svgEl("text", { x: MARGIN.left + 4, y: top + 12 }, "training loss (nats per token)"));
    state.lossCursor = cursorLine(lossChart, top, bottom);
    state.lossDot = svgEl("circle", { r: 5, fill: "var(--accent)", stroke: "#fff", "stroke-width": 2, visibility: "hidden" });
    lossChart.append(state.lossDot);
    state.lossY = loss.y;

    h = 210; top = 10; bottom = 180;
    bpbChart.replaceChildren();
    bpbChart.setAttribute("viewBox", `0 0 ${width} ${h}`);
    bpbChart.setAttribute("height", h);
    const cats = Object.entries(H.categories);
    const bpb = valueScale([H.mix, ...cats.map(([, v]) => v)], top, bottom);
    valueGrid(bpbChart, bpb, 3);
    boundaryTicks(bpbChart, top, bottom);
    runSeparators(bpbChart, top, bottom);
    for (const [cat, values] of cats) {
      seriesLines(bpbChart, H.token, values, bpb.y, { class: "bpb-line", stroke: categoryColor(cat), "data-category": cat });
      H.token.forEach((t, i) => {
        if (values[i] == null) return;
        const dot = svgEl("circle", { cx: plotX(xOfToken(t)), cy: bpb.y(values[i]), r: 3, fill: categoryColor(cat) });
        dot.append(svgEl("title", {}, `${cat} ${bpbText(values[i])} bpb at step ${grouped(H.step[i])}`));
        bpbChart.append(dot);
      });
    }
    seriesLines(bpbChart, H.token, H.mix, bpb.y, { class: "bpb-line mix", "data-category": "mix" });
    bpbChart.append(svgEl("text", { x: MARGIN.left + 4, y: top + 12 }, "held-out bits per byte"));
    state.bpbCursor = cursorLine(bpbChart, top, bottom);
    const legend = document.getElementById("bpb-legend");
    legend.replaceChildren(...cats.map(([cat]) => {
      const li = el("li");
      li.append(el("span", { class: "swatch", style: `background:${categoryColor(cat)}` }), document.createTextNode(cat));
      return li;
    }), (() => {
      const li = el("li");
      li.append(el("span", { class: "swatch", style: "background:var(--fg)" }), document.createTextNode("mix (the phase's weights; dashed)"));
      return li;
    })());
  }

  function renderRun(token) {
    const at = runAtToken(token);
    const lossSub = !at.loss ? "no step finished yet"
      : `step ${grouped(at.loss.step)}` + (at.loss.last && at.loss.step < RUN.total_steps ? " (the run's last so far)" : "");
    setText("cur-loss", at.loss ? at.loss.value.toFixed(4) : "–", { "data-loss": at.loss ? at.loss.value : "", "data-step": at.loss ? at.loss.step : "" });
    setText("cur-loss-sub", lossSub);
    const ev = at.heldout;
    setText("cur-bpb", ev ? bpbText(ev.mix) : "–", { "data-bpb": ev && ev.mix != null ? ev.mix : "", "data-step": ev ? ev.step : "" });
    const since = at.since;
    setText("cur-bpb-sub", !ev ? "no evaluation yet" : `evaluated after step ${grouped(ev.step)}` +
      (since ? `; changes over ${since.phase} (from step ${grouped(since.step)})` : ""));
    document.getElementById("cur-bpb-categories").replaceChildren(...Object.keys(RUN.heldout.categories).map((cat) => {
      const v = ev ? ev.categories[cat] : null;
      const before = since ? since.categories[cat] : null;
      const delta = v != null && before != null ? v - before : null;
      const li = el("li", { "data-category": cat, "data-bpb": v == null ? "" : v, "data-delta": delta == null ? "" : delta });
      li.append(el("span", { class: "swatch", style: `background:${categoryColor(cat)}` }), document.createTextNode(cat + " "),
        el("span", { class: "share" }, bpbText(v)));
      if (delta != null) {
        li.append(el("span", { class: "delta " + (delta < 0 ? "better" : delta > 0 ? "worse" : "") },
          (delta < 0 ? "−" : "+") + Math.abs(delta).toFixed(4)));
      }
      return li;
    }));
    if (at.loss) {
      state.lossDot.setAttribute("cx", plotX(xOfToken(at.loss.token)));
      state.lossDot.setAttribute("cy", state.lossY(at.loss.value));
      state.lossDot.setAttribute("visibility", "visible");
    } else state.lossDot.setAttribute("visibility", "hidden");
  }

  function drawAll() {
    width = Math.max(Math.round(overview.getBoundingClientRect().width) || 800, 480);
    drawOverview();
    drawLr();
    drawArea();
    if (RUN) drawRunCharts();
    // Line the slider's thumb up with the charts' plot area.
    const wrap = document.getElementById("slider-wrap");
    wrap.style.marginLeft = (MARGIN.left - 8) + "px";
    wrap.style.marginRight = (MARGIN.right - 8) + "px";
    render(state.token);
  }

  // ------------------------------------------------------------------ the cursor

  const state = { token: 0 };

  function setText(id, text, attrs = {}) {
    const node = document.getElementById(id);
    node.textContent = text;
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  }

  function render(token) {
    state.token = token;
    const index = phaseIndexAt(token);
    const p = PHASES[index];
    const rawStep = stepAt(p, token);
    const step = Math.min(rawStep, p.last_step);
    const lr = lrAtToken(token);
    const cats = p.categories;
    const x = xOfToken(token);

    const stage = p.stage != null ? `stage ${p.stage} · ` : "";
    setText("cur-phase", p.name, { "data-phase": p.name, "data-phase-index": index });
    setText("cur-phase-sub", `${stage}run ${p.run} · phase ${index + 1} of ${PHASES.length} · ${p.sources.length} sources`);
    setText("cur-token", human(token), { "data-token": token });
    setText("cur-token-sub", `${grouped(token)} of ${human(TOTAL)}`);
    setText("cur-step", grouped(step), { "data-step": step, "data-run": p.run });
    setText("cur-step-sub", `phase steps ${grouped(p.first_step)}–${grouped(p.last_step)}`);
    setText("cur-lr", lrText(lr), { "data-lr": lr });
    const sched = p.schedule;
    const schedText = sched.type === "wsd" ? `WSD, peak ${lrText(sched.peak_lr)}` : sched.type === "cosine" ? `cosine, peak ${lrText(sched.peak_lr)}` : "constant";
    setText("cur-lr-sub", schedText);
    setText("cur-seq", grouped(p.sequence_length), { "data-seq": p.sequence_length });
    setText("cur-seq-sub", `${grouped(p.samples_per_step)} sequences per step`);
    setText("cur-rope", grouped(p.rope_theta), { "data-rope": p.rope_theta });

    // Mix: stacked bar, category legend (web includes multilingual, as in the JSON report).
    const shares = segmentShares(cats);
    const bar = document.getElementById("cur-mixbar");
    bar.replaceChildren(...SEGMENTS.map(([key, label, color]) => el("div", {
      "data-category": key, "data-share": shares[key], title: `${label} ${pct(shares[key])}`,
      style: `width:${100 * shares[key]}%;background:${color}`,
    })));
    const legend = document.getElementById("cur-categories");
    legend.replaceChildren(...["web", "multilingual", "code", "math", "reasoning"].map((cat) => {
      const li = el("li", { "data-category": cat, "data-share": cats[cat] });
      const color = cat === "multilingual" ? "var(--multilingual)" : CATEGORY_COLOR[cat];
      li.append(el("span", { class: "swatch", style: `background:${color}` }), document.createTextNode(cat + " "),
        el("span", { class: "share" }, pct(cats[cat])));
      if (cat === "multilingual") li.append(el("span", { class: "of" }, "(part of web)"));
      return li;
    }));

    // Top sources plus the rest.
    const sorted = [...p.sources].sort((a, b) => b.share - a.share);
    const top = sorted.slice(0, TOP_SOURCES);
    const rest = sorted.slice(TOP_SOURCES);
    const maxShare = sorted.length ? sorted[0].share : 1;
    const rows = top.map((s) => sourceRow(s.name, s.category, s.share, maxShare, CATEGORY_COLOR[s.category]));
    if (rest.length) {
      const other = rest.reduce((a, s) => a + s.share, 0);
      const row = sourceRow(`other (${rest.length} sources)`, "", other, Math.max(maxShare, other), "#aab");
      row.classList.add("other");
      row.setAttribute("data-source", "(other)");
      rows.push(row);
    }
    document.querySelector("#cur-top tbody").replaceChildren(...rows);

    // Epochs so far.
    const epochs = [...epochsAtToken(token).entries()].sort((a, b) => b[1].epochs - a[1].epochs);
    const maxEpochs = Math.max(REPORT.epoch_warning, ...epochs.map(([, e]) => e.epochs));
    document.querySelector("#cur-epochs tbody").replaceChildren(...epochs.map(([name, e]) => {
      const tr = el("tr", { "data-source": name, "data-epochs": e.epochs });
      if (e.epochs > REPORT.epoch_warning) tr.classList.add("warn");
      const bar = el("span", { style: `width:${(100 * e.epochs) / maxEpochs}%;background:${e.epochs > REPORT.epoch_warning ? "#b3261e" : "var(--web)"}` });
      const cell = el("td", { class: "bar" });
      cell.append(bar);
      tr.append(el("td", {}, name), el("td", {}, human(e.size)), el("td", {}, e.epochs.toFixed(3)), cell);
      return tr;
    }));
    // Whether any size is known is a property of the whole curriculum, not of the cursor.
    const sources = PHASES.flatMap((q) => q.sources);
    const all = new Set(sources.map((s) => s.name)).size;
    const sized = new Set(sources.filter((s) => s.available_tokens).map((s) => s.name)).size;
    setText("epochs-note", !sized
      ? "No source size is known (add 'tokens' to the catalog, or pass --shards to use built shards)."
      : epochs.length
        ? `Cumulative epochs of the ${epochs.length} sources trained so far whose size is known (${sized} of all ${all}), at ${human(token)} tokens; warning above ${REPORT.epoch_warning}.`
        : `None of the sources trained so far has a known size (${sized} of all ${all} sources have one).`);

    // Cursor marks on the charts and the slider.
    const px = plotX(x);
    if (RUN) renderRun(token);
    for (const line of [state.overviewCursor, state.lrCursor, state.areaCursor, state.lossCursor, state.bpbCursor]) if (line) { line.setAttribute("x1", px); line.setAttribute("x2", px); }
    if (state.lrDot) { state.lrDot.setAttribute("cx", px); state.lrDot.setAttribute("cy", state.lrY(lr)); }
    for (const r of overview.querySelectorAll(".phase-rect")) r.classList.toggle("current", Number(r.dataset.phaseIndex) === index);
    slider.value = String(Math.round(x * POSITIONS));
    slider.setAttribute("aria-valuetext", `${human(token)} tokens, phase ${p.name}, step ${grouped(step)}, learning rate ${lrText(lr)}`);
    for (const d of document.querySelectorAll("details.diff")) {
      const isCurrent = Number(d.dataset.toPhase) === index;
      d.classList.toggle("current", isCurrent);
      if (!d.dataset.userToggled) d.open = isCurrent;  // follow the cursor until the reader toggles it
    }
  }

  function sourceRow(name, category, share, maxShare, color) {
    const tr = el("tr", { "data-source": name, "data-share": share });
    const cell = el("td", { class: "bar" });
    cell.append(el("span", { style: `width:${(100 * share) / maxShare}%;background:${color}` }));
    tr.append(el("td", {}, name), el("td", {}, category), el("td", {}, pct(share, 2)), cell);
    return tr;
  }

  function setToken(token) { render(Math.min(Math.max(token, 0), TOTAL)); }

  function phaseStarts() { return PHASES.map((p) => p.start_token); }

  // ------------------------------------------------------------------ input

  slider.max = String(POSITIONS);
  slider.addEventListener("input", () => render(tokenOfX(Number(slider.value) / POSITIONS)));
  slider.addEventListener("keydown", (ev) => {
    const starts = phaseStarts();
    const index = phaseIndexAt(state.token);
    let handled = true;
    if (ev.key === "PageDown") setToken(index + 1 < starts.length ? starts[index + 1] : TOTAL);
    else if (ev.key === "PageUp") setToken(state.token > starts[index] ? starts[index] : starts[Math.max(index - 1, 0)]);
    else if (ev.key === "Home") setToken(0);
    else if (ev.key === "End") setToken(TOTAL);
    else if (/^[1-9]$/.test(ev.key) && Number(ev.key) <= PHASES.length) setToken(starts[Number(ev.key) - 1]);
    else if (ev.shiftKey && (ev.key === "ArrowRight" || ev.key === "ArrowUp" || ev.key === "ArrowLeft" || ev.key === "ArrowDown")) {
      const dir = ev.key === "ArrowRight" || ev.key === "ArrowUp" ? 1 : -1;
      const pos = Math.min(Math.max(Number(slider.value) + dir * 100, 0), POSITIONS);
      render(tokenOfX(pos / POSITIONS));
    } else handled = false;
    if (handled) ev.preventDefault();
  });
  for (const svg of RUN ? [overview, lrChart, areaChart, lossChart, bpbChart] : [overview, lrChart, areaChart]) {
    svg.addEventListener("click", (ev) => {
      if (ev.target.classList && ev.target.classList.contains("phase-rect")) return;
      const box = svg.getBoundingClientRect();
      const px = ((ev.clientX - box.left) / box.width) * width;
      setToken(tokenOfX(xFromPixel(px)));
      slider.focus();
    });
  }
  for (const d of document.querySelectorAll("details.diff")) {
    d.querySelector("summary").addEventListener("click", () => { d.dataset.userToggled = "1"; });
  }
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawAll, 80); });

  const runs = RUNS.length > 1 ? `, ${RUNS.length} runs` : "";
  setText("summary", `${PHASES.length} phases${runs} · ${human(TOTAL)} tokens · global batch ${grouped(GBS)} tokens · ` +
    `tokenizer ${REPORT.recipe.tokenizer} · model ${REPORT.recipe.model}` +
    (RUN ? ` · run ${RUN.path}: step ${grouped(RUN.steps_done)} of ${grouped(RUN.total_steps)}` : ""));
  if (RUN) {
    document.getElementById("run-section").hidden = false;
    setText("run-note", `${grouped(RUN.loss.step.length)} steps, ${grouped(RUN.heldout.step.length)} held-out evaluations; ` +
      "each point at the token where its step ends");
  }
  drawAll();
  document.getElementById("app").setAttribute("data-ready", "1");

  // For tests and the curious: the same numbers the page shows, by token position.
  window.mixcTimeline = { setToken, lrAtToken, epochsAtToken, phaseIndexAt, tokenOfX, xOfToken, runAtToken: RUN ? runAtToken : null, state };
})();

// autopeft dashboard: plain JavaScript, no build step, no library.
// Data comes from the same JSON API as the CLI (/v1/...), polled every 2 s with ETags.
"use strict";

// The API lives beside /ui/, so the page works behind a path prefix (/prefix/ui/).
const API = location.pathname.replace(/\/ui(\/.*)?$/, "/") + "v1/";
const TOKEN_KEY = "autopeft.token";
const POLL_MS = 2000;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  route: null,          // {view: "studies"} | {view: "study", id}
  timer: null,          // the next poll
  etags: new Map(),     // url -> [etag, body]
  trials: [],           // the study page's trials (every page)
  sort: {key: "number", dir: 1},
  generation: 0,        // bumps on navigation: late answers of the old view are dropped
  polling: null,        // the poll in flight (a promise), or null: one poll at a time
  pollAgain: false,     // a poll was asked for while one was in flight: run one after it
  clock: null,          // {server, local}: the server's clock (epoch s) read at local ms
  shareCount: "deployed",  // the share the study minimises (param_share): deployed or trainable
  front: "observed",    // the front plotted and tabled: "observed" (default) or "model"
  frontDirty: false,    // the front switch changed: redraw the front at the next answer
  fidelity: false,      // the study declares a fidelity axis (its trials carry a level)
};

// ----------------------------------------------------------------------------- helpers

const $ = (selector) => document.querySelector(selector);

/** An element with attributes and children (strings become text nodes, never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return node;
}

const fmt = {
  score: (v) => (v === null || v === undefined ? "-" : v.toFixed(4)),
  share: (v) => (v === null || v === undefined ? "-" : v < 0.01 ? v.toExponential(2) : v.toPrecision(3)),
  hv: (v) => (v === null || v === undefined ? "-" : v.toPrecision(4)),
  seconds(v) {
    if (v === null || v === undefined || !isFinite(v)) return "-";
    if (v < 60) return `${v.toFixed(v < 10 ? 1 : 0)} s`;
    if (v < 3600) return `${Math.floor(v / 60)} min ${Math.round(v % 60)} s`;
    return `${Math.floor(v / 3600)} h ${Math.round((v % 3600) / 60)} min`;
  },
  time: (epoch) => new Date(epoch * 1000).toLocaleString(),
  /** A fidelity level (fraction of full training): "0.333", "1". */
  level: (v) => (v === null || v === undefined ? "-" : String(Number(v.toPrecision(3)))),
  /** A model prediction: "0.8123 [0.7901, 0.8345]" (mean [low, high]). */
  interval: (p) => `${fmt.score(p.mean)} [${fmt.score(p.low)}, ${fmt.score(p.high)}]`,
  /** A prediction's interval level in percent: "90 %". */
  percent: (v) => `${Number((100 * v).toPrecision(3))} %`,
};

/** A fidelity study's trial's scores at each level it reached: "0.333: 0.7012". */
function observationLines(trial) {
  return (trial.observations || []).map((o) => `${fmt.level(o.fidelity)}: ${fmt.score(o.score)}`);
}

/** The server's clock now (epoch s), from the last answer that carried it: leases are
 * stamped by the server, so elapsed times are read against its clock, not this machine's. */
function serverNow() {
  if (!state.clock) return Date.now() / 1000;
  return state.clock.server + (Date.now() - state.clock.local) / 1000;
}

/** A running trial's last heartbeat progress in words: the phase when the worker names
 * one, "step 30/120", "loss 0.4321"; "-" when it sent none. */
function progressText(progress) {
  if (!progress || typeof progress !== "object") return "-";
  const number = (v) => typeof v === "number" && isFinite(v);
  const parts = [];
  if (typeof progress.phase === "string" && progress.phase) parts.push(progress.phase);
  if (number(progress.step)) {
    parts.push(number(progress.total_steps) ? `step ${progress.step}/${progress.total_steps}`
      : `step ${progress.step}`);
  }
  if (number(progress.loss)) parts.push(`loss ${Number(progress.loss.toPrecision(4))}`);
  return parts.length ? parts.join(" · ") : "-";
}

/** The share of a running trial's steps done (0..1), or null when unknown. */
function progressShare(progress) {
  if (!progress || typeof progress !== "object") return null;
  const {step, total_steps: total} = progress;
  return typeof step === "number" && typeof total === "number" && total > 0
    ? Math.min(step / total, 1) : null;
}

function done(study) {
  const c = study.counts;
  return (c.completed || 0) + (c.failed || 0) + (c.pruned || 0);
}

// ----------------------------------------------------------------------------- the API

class Unauthorized extends Error {}

/** GET or POST ``path`` with the session's token. GETs send the last ETag of the URL and
 * return {changed: false} on 304. A 401 brings the login back. */
async function api(path, {method = "GET"} = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) throw new Unauthorized("sign in first");
  const url = API + path;
  const headers = {Authorization: `Bearer ${token}`, Accept: "application/json"};
  const cached = method === "GET" ? state.etags.get(url) : undefined;
  if (cached) headers["If-None-Match"] = cached[0];
  const response = await fetch(url, {method, headers, cache: "no-store"});
  if (response.status === 304 && cached) return {changed: false, body: cached[1]};
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw new Unauthorized((body && body.detail) || "unauthorized");
  }
  if (!response.ok) {
    const detail = body && body.detail;
    const text = typeof detail === "string" ? detail
      : Array.isArray(detail) ? detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ")
      : response.statusText;
    const error = new Error(`HTTP ${response.status}: ${text}`);
    error.status = response.status;
    throw error;
  }
  const etag = response.headers.get("ETag");
  if (method === "GET" && etag) state.etags.set(url, [etag, body]);
  return {changed: true, body};
}

// ----------------------------------------------------------------------------- views

function show(view) {
  for (const id of ["login-view", "studies-view", "study-view"]) {
    $(`#${id}`).hidden = id !== view;
  }
  $("#logout").hidden = view === "login-view";
  $("#live").hidden = view === "login-view";
}

function showLogin(message = "") {
  stopPolling();
  state.etags.clear();
  show("login-view");
  $("#login-error").textContent = message;
  $("#token").value = "";
  $("#token").focus();
}

function showError(message) {
  $("#error").textContent = message;
}

function parseRoute() {
  const match = location.hash.match(/^#\/studies\/(\d+)$/);
  return match ? {view: "study", id: Number(match[1])} : {view: "studies"};
}

function navigate() {
  state.generation += 1;
  state.route = parseRoute();
  state.trials = [];
  state.shareCount = "deployed";
  state.etags.clear();  // the new view starts empty: its first answers must be full
  showError("");
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showLogin();
    return;
  }
  if (state.route.view === "study") {
    $("#trial-filter").value = "";
    $("#state-filter").value = "";
    for (const id of ["#study-name", "#study-meta", "#study-reason", "#study-title"]) {
      $(id).textContent = "";
    }
    for (const id of ["#pareto", "#hypervolume", "#study-counts"]) $(id).replaceChildren();
    for (const id of ["#trials tbody", "#workers tbody", "#front tbody"]) {
      $(id).replaceChildren();
    }
    $("#front-note").hidden = true;
    $("#front-count").textContent = "";
    state.fidelity = false;
    state.frontDirty = true;  // the new study's front is drawn from its first answer
  }
  show(state.route.view === "study" ? "study-view" : "studies-view");
  poll();
}

function stopPolling() {
  if (state.timer !== null) clearTimeout(state.timer);
  state.timer = null;
}

/** Refresh the view now, one poll at a time: asked while one is in flight (the cancel
 * button, a navigation), it runs once more after it. Overlapping polls answer out of
 * order: the older one's answers, drawn last, would show a state already gone (a worker
 * idle whose trial is leased) until the next poll. */
function poll() {
  if (state.polling) {
    state.pollAgain = true;
    return state.polling;
  }
  state.polling = pollOnce().finally(() => {
    state.polling = null;
    if (state.pollAgain) {
      state.pollAgain = false;
      poll();
    }
  });
  return state.polling;
}

async function pollOnce() {
  stopPolling();
  const generation = state.generation;
  try {
    if (state.route.view === "study") await refreshStudy(state.route.id, generation);
    else await refreshStudies(generation);
    if (generation === state.generation) showError("");
    $("#live").classList.remove("stale");
  } catch (error) {
    if (error instanceof Unauthorized) {
      showLogin(`Signed out: ${error.message}. Enter a client token.`);
      return;
    }
    $("#live").classList.add("stale");
    if (generation === state.generation) {
      showError(error.status === 403
        ? "This token has no reader role: the dashboard needs a person's token (reader, member or admin)."
        : `Could not refresh: ${error.message}`);
    }
  }
  if (generation === state.generation && sessionStorage.getItem(TOKEN_KEY)) {
    state.timer = setTimeout(poll, POLL_MS);
  }
}

// ----------------------------------------------------------------------------- study list

async function refreshStudies(generation) {
  const [{changed, body}, usage] = await Promise.all([api("studies?limit=100"), usageAnswer()]);
  if (generation !== state.generation) return;
  if (usage.changed) renderUsage(usage);
  if (!changed) return;
  const rows = body.items.map((study) => el("tr", {"data-study": study.id},
    el("td", {}, study.id),
    el("td", {}, el("a", {href: `#/studies/${study.id}`}, study.name)),
    el("td", {}, el("span", {class: `badge ${study.state}`}, study.state)),
    el("td", {}, el("progress", {max: study.total_trials || 1, value: done(study)}),
      ` ${done(study)}/${study.total_trials}`),
    el("td", {class: "num"}, fmt.score(study.best && study.best.objective)),
    el("td", {class: "num"}, fmt.hv(study.hypervolume)),
    el("td", {}, fmt.time(study.created_at))));
  $("#studies tbody").replaceChildren(...rows);
  $("#studies-empty").hidden = body.items.length > 0;
}

// ---- usage against quota (the caller's tenant; an admin's: every tenant)

/** ``/v1/usage``; a failure other than a 401 (a server without the route) is the panel's
 * note, not the page's error: the study list still refreshes beside it. */
async function usageAnswer() {
  try {
    return await api("usage");
  } catch (error) {
    if (error instanceof Unauthorized) throw error;
    return {changed: true, error};
  }
}

function renderUsage({body, error}) {
  const note = $("#usage-note");
  note.textContent = error ? `Usage unavailable: ${error.message}` : "";
  note.hidden = !error;
  $("#usage").hidden = Boolean(error) || !body.length;
  if (error) return;
  $("#usage tbody").replaceChildren(...body.map((u) => el("tr", {"data-tenant": u.tenant},
    el("td", {}, u.tenant),
    el("td", {class: "num"}, Number(u.weight.toPrecision(3))),
    quotaCell("running", u.running_studies, u.max_running_studies),
    quotaCell("leased", u.leased_trials, u.max_parallel_trials),
    quotaCell("ready", u.ready_trials, u.max_queued_trials))));
}

/** "used/quota" with a meter; at or past the quota the cell is marked "full" and says so
 * in words (the colour alone would not reach a screen reader). Null quota: no limit. */
function quotaCell(name, used, quota) {
  if (quota === null || quota === undefined) {
    return el("td", {class: `num quota ${name}`},
      el("span", {class: "used"}, used), " ", el("span", {class: "meta"}, "(no limit)"));
  }
  const full = used >= quota;
  return el("td", {class: `num quota ${name}${full ? " full" : ""}`},
    // the meter repeats the text for the eye (hidden from screen readers); low = high
    // just under the quota, optimum 0: the browser draws it green below, red at the quota
    quota > 0 ? el("meter", {min: 0, max: quota, value: Math.min(used, quota),
      low: quota - 0.5, high: quota - 0.5, optimum: 0, "aria-hidden": "true"}) : null,
    " ", el("span", {class: "used"}, `${used}/${quota}`),
    full ? el("span", {class: "quota-note"}, "quota reached") : null);
}

// ----------------------------------------------------------------------------- study page

async function allTrials(id) {
  const limit = 500;
  let offset = 0;
  let changed = false;
  const items = [];
  for (;;) {
    const page = await api(`studies/${id}/trials?offset=${offset}&limit=${limit}`);
    changed = changed || page.changed;
    items.push(...page.body.items);
    offset += limit;
    if (offset >= page.body.total) break;
  }
  return {changed: changed || items.length !== state.trials.length, items};
}

async function refreshStudy(id, generation) {
  // the observed front keeps its plain URL; the model front is another URL (its own ETag)
  const front = state.front;
  const [study, pareto, history, trials, workers] = await Promise.all([
    api(`studies/${id}`), api(`studies/${id}/pareto${front === "model" ? "?front=model" : ""}`),
    api(`studies/${id}/hypervolume`), allTrials(id), api(`workers?study_id=${id}`)]);
  if (generation !== state.generation) return;
  state.clock = {server: workers.body.now, local: Date.now()};
  if (study.changed) renderStudyHead(study.body);
  if (trials.changed) state.trials = trials.items;
  markFidelity();
  // running trials' elapsed times move on between answers: redraw while any runs
  if (trials.changed || state.trials.some((t) => t.state === "leased")) renderTrials();
  // an answer for the front switched away from is not drawn: the poll after it draws
  // the one chosen (the switch asks for it)
  if (front === state.front && (trials.changed || pareto.changed || state.frontDirty)) {
    state.frontDirty = false;
    renderPareto(pareto.body, state.trials);
    renderFrontTable(pareto.body);
  }
  if (history.changed) renderHypervolume(history.body);
  renderWorkers(workers.body);
}

function renderStudyHead(study) {
  const spec = study.spec || {};
  state.shareCount = study.param_share_count || spec.param_share || "deployed";
  state.fidelity = Boolean(spec.fidelity);
  markObjectiveShare();
  $("#study-title").textContent = `${study.id}: ${study.name}`;
  $("#study-name").textContent = study.name;
  $("#study-meta").textContent = [
    `study ${study.id}`, study.state, spec.task, spec.backbone,
    spec.search_space && spec.search_space.kind ? `space ${spec.search_space.kind}` : null,
    spec.optimizer && spec.optimizer.name ? `optimizer ${spec.optimizer.name}` : null,
    `created ${fmt.time(study.created_at)}`].filter(Boolean).join(" · ");
  $("#study-reason").textContent = study.reason || "";
  const warm = spec.warm_start;  // which studies it learnt from (issue 32)
  $("#study-warm").hidden = !warm;
  $("#study-warm").replaceChildren(...(warm ? [`warm start (${warm.mode}) from `,
    ...warm.from_studies.flatMap((id, i) => [i ? ", " : "",
      el("a", {href: `#/studies/${id}`, "data-source": id}, `study ${id}`)]),
    warm.mode === "seed" ? ": its Pareto configurations are the trials marked transfer" : "",
    ...transferLearnt(study.transfer)]
    : []));
  const counts = [["done", `${done(study)}/${study.total_trials}`],
    ["running", study.counts.leased || 0], ["queued", study.counts.ready || 0],
    ["completed", study.counts.completed || 0], ["pruned", study.counts.pruned || 0],
    ["failed", study.counts.failed || 0], ["Pareto", study.pareto_size],
    ["hypervolume", fmt.hv(study.hypervolume)],
    ["best score", fmt.score(study.best && study.best.objective)]];
  $("#study-counts").replaceChildren(...counts.map(([label, value]) =>
    el("div", {class: "card", "data-count": label}, el("span", {class: "value"}, value),
      el("span", {class: "label"}, label))));
  const cancel = $("#cancel");
  cancel.hidden = study.state !== "running";
  cancel.onclick = async () => {
    if (!confirm(`Cancel study ${study.id} (${study.name})? Queued and running trials stop.`)) return;
    cancel.disabled = true;
    try {
      await api(`studies/${study.id}/cancel`, {method: "POST"});
      await poll();
    } catch (error) {
      if (error instanceof Unauthorized) showLogin(`Signed out: ${error.message}.`);
      else showError(`Cancel failed: ${error.message}`);
    } finally {
      cancel.disabled = false;
    }
  };
}

// ---- plots (hand-written SVG: two scatter/line plots need no charting library)

const PLOT = {width: 600, height: 360, left: 62, right: 16, top: 14, bottom: 64};

function linearScale(lo, hi, a, b) {
  const span = hi - lo || 1;
  return (v) => a + ((v - lo) / span) * (b - a);
}

function niceTicks(lo, hi, count = 5) {
  const span = hi - lo || 1;
  const step = Math.pow(10, Math.floor(Math.log10(span / count)));
  const mult = [1, 2, 5, 10].find((m) => span / (m * step) <= count) || 10;
  const unit = mult * step;
  const ticks = [];
  for (let t = Math.ceil(lo / unit) * unit; t <= hi + unit * 1e-9; t += unit) ticks.push(t);
  return ticks;
}

function axes(node, xTicks, yTicks, x, y, xLabel, yLabel, xFormat, yFormat) {
  const {width, height, left, right, top, bottom} = PLOT;
  const group = svg("g", {class: "axes"});
  for (const t of yTicks) {
    group.append(svg("line", {x1: left, x2: width - right, y1: y(t), y2: y(t), class: "gridline"}),
      svg("text", {x: left - 6, y: y(t) + 4, "text-anchor": "end"}, yFormat(t)));
  }
  for (const t of xTicks) {
    group.append(svg("line", {x1: x(t), x2: x(t), y1: top, y2: height - bottom, class: "gridline"}),
      svg("text", {x: x(t), y: height - bottom + 16, "text-anchor": "middle"}, xFormat(t)));
  }
  group.append(
    svg("rect", {x: left, y: top, width: width - left - right, height: height - top - bottom,
      class: "frame"}),
    svg("text", {x: (left + width - right) / 2, y: height - bottom + 34, "text-anchor": "middle",
      class: "label"}, xLabel),
    svg("text", {transform: `translate(14 ${(top + height - bottom) / 2}) rotate(-90)`,
      "text-anchor": "middle", class: "label"}, yLabel));
  node.append(group);
}

function tooltipFor(node, lines) {
  node.append(svg("title", {}, lines.join("\n")));
  node.addEventListener("mouseenter", (event) => {
    const tip = $("#tooltip");
    tip.replaceChildren(...lines.map((line) => el("div", {}, line)));
    tip.hidden = false;
    tip.style.left = `${event.pageX + 12}px`;
    tip.style.top = `${event.pageY + 12}px`;
  });
  node.addEventListener("mouseleave", () => { $("#tooltip").hidden = true; });
}

/** "deployed share 0.203 % (objective) · trainable share 4.17 %": both shares of a
 * trial, percent of the backbone, the one the study minimises marked. */
function shareLine(trial) {
  return ["deployed", "trainable"].map((name) => `${name} share `
    + `${fmt.share(trial[`${name}_share`])} %${name === state.shareCount ? " (objective)" : ""}`)
    .join(" · ");
}

function trialLines(trial) {
  const lines = [`trial #${trial.number} (${trial.state})`, trial.config_description];
  if (trial.predicted) {
    lines.push(`predicted ${fmt.interval(trial.predicted)} (mean [${fmt.percent(
      trial.predicted.level)} interval], full training)`);
  }
  lines.push(`score ${fmt.score(trial.objective)} · dev score ${fmt.score(trial.dev_score)}`);
  if (trial.fidelity !== null && trial.fidelity !== undefined) {
    const seen = observationLines(trial);
    lines.push(`level ${fmt.level(trial.fidelity)}${seen.length ? ` · scores by level ${seen.join(", ")}` : ""}`);
  }
  lines.push(shareLine(trial));
  return lines;
}

/** Show the level columns when the study declares a fidelity axis (or a trial has one). */
function markFidelity() {
  const shown = state.fidelity || state.trials.some((t) => t.fidelity !== null && t.fidelity !== undefined);
  for (const id of ["#trials", "#front"]) $(id).classList.toggle("with-fidelity", shown);
}

/** The trial table's share headers: both shares, the objective one marked with a star. */
function markObjectiveShare() {
  for (const th of document.querySelectorAll("#trials th[data-share]")) {
    const objective = th.dataset.share === state.shareCount;
    th.textContent = `${th.dataset.share} %${objective ? " \u2605" : ""}`;
    th.classList.toggle("objective", objective);
    th.title = (th.dataset.share === "deployed"
      ? "Parameters stored per task after training (a prefix's MLP folded away)"
      : "Parameters that train (a prefix's MLP included)")
      + ", percent of the backbone" + (objective ? "; the share this study minimises" : "");
  }
}

/** The front switch's state on the page: the note when the model front fell back to the
 * observed one, the legend's interval key, the table's headers. */
function markFront(pareto) {
  const model = pareto.front === "model";
  const note = $("#front-note");
  note.textContent = pareto.note || "";
  note.hidden = !pareto.note;
  $("#legend-front").textContent = model ? "model-predicted front (posterior mean)" : "Pareto front";
  $("#legend-interval").hidden = !model;
  $("#front-title").textContent = model ? "Model-predicted Pareto front" : "Pareto front";
  $("#front-score-head").textContent = model ? "predicted score [90 % interval]" : "score";
  $("#front").classList.toggle("model", model);
}

function renderPareto(pareto, trials) {
  const node = $("#pareto");
  node.replaceChildren();
  markFront(pareto);
  const model = pareto.front === "model";
  const frontIds = new Set(pareto.trials.map((t) => t.id));
  const scored = trials.filter((t) => t.state === "completed" && t.objective !== null
    && t.param_share !== null && t.param_share > 0);
  const pending = trials.filter((t) => (t.state === "ready" || t.state === "leased")
    && t.param_share !== null && t.param_share > 0);
  // the model front's points: the answer's trials at their predicted means (a fidelity
  // study's paused trials among them); the observed front's: the completed trials on it
  const predicted = model ? pareto.trials.filter((t) => t.predicted && t.param_share !== null
    && t.param_share > 0) : [];
  const shares = [...scored, ...pending, ...predicted].map((t) => Math.log10(t.param_share));
  const {width, height, left, right, top, bottom} = PLOT;
  if (!shares.length) {
    node.append(svg("text", {x: width / 2, y: height / 2, "text-anchor": "middle",
      class: "empty"}, "No trials yet"));
    return;
  }
  let [xlo, xhi] = [Math.min(...shares), Math.max(...shares)];
  if (xhi - xlo < 1) { const mid = (xlo + xhi) / 2; xlo = mid - 0.5; xhi = mid + 0.5; }
  xlo -= 0.05 * (xhi - xlo); xhi += 0.05 * (xhi - xlo);
  const scores = [...scored.map((t) => t.objective),
    ...predicted.flatMap((t) => [t.predicted.low, t.predicted.high])];
  let [ylo, yhi] = scores.length ? [Math.min(...scores), Math.max(...scores)] : [0, 1];
  if (yhi - ylo < 1e-6) { ylo -= 0.05; yhi += 0.05; }
  const pad = 0.08 * (yhi - ylo);
  ylo -= pad; yhi += pad;
  const plotBottom = height - bottom;
  const x = linearScale(xlo, xhi, left, width - right);
  const y = linearScale(ylo, yhi, plotBottom, top);
  const xTicks = [];
  for (let e = Math.ceil(xlo); e <= Math.floor(xhi); e++) xTicks.push(e);
  axes(node, xTicks, niceTicks(ylo, yhi), x, y,
    `${state.shareCount} share (% of the backbone, log scale)`,
    model ? "held-out score (front: predicted at full training)" : "held-out score",
    (e) => `${Number(Math.pow(10, e).toPrecision(1))}%`, (v) => v.toFixed(3));

  const frontScore = (t) => (model ? t.predicted.mean : t.objective);
  const front = (model ? predicted : scored.filter((t) => frontIds.has(t.id)))
    .sort((a, b) => a.param_share - b.param_share || frontScore(a) - frontScore(b));
  if (front.length) {
    // the attainable region's boundary: from each front point, right to the next share, up
    let path = `M ${x(Math.log10(front[0].param_share))} ${y(frontScore(front[0]))}`;
    for (let i = 1; i < front.length; i++) {
      path += ` H ${x(Math.log10(front[i].param_share))} V ${y(frontScore(front[i]))}`;
    }
    path += ` H ${width - right}`;
    node.append(svg("path", {d: path, class: model ? "staircase model" : "staircase"}));
  }
  // model front: each point's interval as a vertical error bar (drawn under the points)
  for (const trial of predicted) {
    const cx = x(Math.log10(trial.param_share));
    const [lo, hi] = [y(trial.predicted.low), y(trial.predicted.high)];
    const bar = svg("g", {class: "errorbar", "data-trial": trial.number,
      "data-low": trial.predicted.low, "data-high": trial.predicted.high},
    svg("line", {x1: cx, x2: cx, y1: lo, y2: hi}),
    svg("line", {x1: cx - 4, x2: cx + 4, y1: lo, y2: lo}),
    svg("line", {x1: cx - 4, x2: cx + 4, y1: hi, y2: hi}));
    tooltipFor(bar, trialLines(trial));
    node.append(bar);
  }
  // completed trials at their observed scores (on the model plot, those off its front)
  for (const trial of scored) {
    const onFront = frontIds.has(trial.id);
    if (model && onFront) continue;  // drawn at its predicted mean below
    const dot = svg("circle", {cx: x(Math.log10(trial.param_share)), cy: y(trial.objective),
      r: onFront ? 5.5 : 4, class: onFront ? "point front" : "point trial",
      "data-trial": trial.number});
    tooltipFor(dot, trialLines(trial));
    node.append(dot);
  }
  for (const trial of predicted) {
    const dot = svg("circle", {cx: x(Math.log10(trial.param_share)),
      cy: y(trial.predicted.mean), r: 5.5, class: "point front predicted",
      "data-trial": trial.number});
    tooltipFor(dot, trialLines(trial));
    node.append(dot);
  }
  // queued and running trials: their share is known, their score not yet: a strip below
  const stripY = plotBottom + 48;
  node.append(svg("text", {x: left - 6, y: stripY + 4, "text-anchor": "end", class: "label small"},
    "pending"));
  for (const trial of pending) {
    const cx = x(Math.log10(trial.param_share));
    const mark = svg("path", {d: `M ${cx} ${stripY - 5} l 5 5 l -5 5 l -5 -5 z`,
      class: `point pending ${trial.state}`, "data-trial": trial.number});
    tooltipFor(mark, trialLines(trial));
    node.append(mark);
  }
}

/** The front's trials in a table, by share: the observed score, or on the model front the
 * predicted score as mean [low, high] beside the observed one. */
function renderFrontTable(pareto) {
  const model = pareto.front === "model";
  const rows = [...pareto.trials]
    .sort((a, b) => (a.param_share ?? Infinity) - (b.param_share ?? Infinity) || a.number - b.number)
    .map((t) => el("tr", {"data-trial": t.number},
      el("td", {class: "num"}, t.number),
      el("td", {}, el("span", {class: `badge ${t.state}`}, t.state)),
      fidelityCell(t),
      model && t.predicted
        ? el("td", {class: "num score predicted", title: `mean [${fmt.percent(
          t.predicted.level)} interval] of the score at full training`},
        fmt.interval(t.predicted))
        : el("td", {class: "num score"}, fmt.score(t.objective)),
      el("td", {class: "num observed model-only"}, fmt.score(t.objective)),
      el("td", {class: "num share deployed"}, fmt.share(t.deployed_share)),
      el("td", {class: "num share trainable"}, fmt.share(t.trainable_share)),
      el("td", {class: "config"}, t.config_description)));
  $("#front tbody").replaceChildren(...rows);
  $("#front-count").textContent = `${rows.length} trial${rows.length === 1 ? "" : "s"}`;
}

/** A trial's fidelity level; its scores at each level reached listed small beneath and in
 * the cell's tooltip ("0.333: 0.7012"). Hidden in a study without fidelity. */
function fidelityCell(t) {
  const seen = observationLines(t);
  return el("td", {class: "num fidelity", title: seen.length
    ? `scores by level (level: score)\n${seen.join("\n")}` : null},
  fmt.level(t.fidelity),
  seen.length ? el("span", {class: "observations"}, seen.join(" · ")) : null);
}

function renderHypervolume(history) {
  const node = $("#hypervolume");
  node.replaceChildren();
  const points = history.points;
  const {width, height, left, right, top, bottom} = PLOT;
  if (!points.length) {
    node.append(svg("text", {x: width / 2, y: height / 2, "text-anchor": "middle",
      class: "empty"}, "No completed trials yet"));
    return;
  }
  const xhi = Math.max(points.length, 2);
  const yhi = Math.max(...points.map((p) => p.hypervolume)) * 1.08 || 1;
  const x = linearScale(0, xhi, left, width - right);
  const y = linearScale(0, yhi, height - bottom, top);
  axes(node, niceTicks(0, xhi).filter((t) => Number.isInteger(t)), niceTicks(0, yhi), x, y,
    "completed trials", "hypervolume", (t) => String(t), (v) => Number(v.toPrecision(3)));
  let path = `M ${x(0)} ${y(0)}`;
  for (const p of points) path += ` H ${x(p.completed)} V ${y(p.hypervolume)}`;
  node.append(svg("path", {d: path, class: "hv-line"}));
  for (const p of points) {
    const dot = svg("circle", {cx: x(p.completed), cy: y(p.hypervolume), r: 2.5, class: "hv-point"});
    tooltipFor(dot, [`after ${p.completed} completed (trial #${p.trial_number})`,
      `hypervolume ${fmt.hv(p.hypervolume)}`]);
    node.append(dot);
  }
}

/** The trials ``worker`` holds: its leases in the workers answer (every study), and any
 * trial the trial table shows it running (the two answers are read a moment apart: a
 * worker is never drawn idle beside a table that shows it running a trial). */
function heldTrials(worker) {
  const held = worker.trials.map((t) => ({study: t.study_id, id: t.trial_id, number: t.number}));
  const ids = new Set(held.map((t) => t.id));
  for (const trial of state.trials) {
    if (trial.state === "leased" && trial.worker === worker.name && !ids.has(trial.id)) {
      held.push({study: state.route.id, id: trial.id, number: trial.number});
    }
  }
  return held.sort((a, b) => a.study - b.study || a.number - b.number);
}

function renderWorkers(list) {
  const rows = list.items.map((worker) => {
    const held = heldTrials(worker);
    return el("tr", {"data-worker": worker.name},
      el("td", {}, worker.name),
      el("td", {}, el("span", {class: worker.alive ? "dot alive" : "dot gone"}),
        worker.alive ? " alive" : " silent"),
      el("td", {}, `${fmt.seconds(list.now - worker.last_seen)} ago`),
      el("td", {class: "current"}, held.length
        ? held.map((t) => `#${t.number}${t.study === state.route.id ? "" : ` (study ${t.study})`}`).join(", ")
        : "idle"),
      el("td", {class: "num study-trials"}, worker.study_trials ?? "-"),
      el("td", {class: "num leases"}, worker.leases));
  });
  $("#workers tbody").replaceChildren(...rows);
  $("#workers-empty").hidden = rows.length > 0;
}

// ---- trial table: sortable, filterable

/** A trial with the table's derived columns: queued and ran times (a running trial's
 * ran time is its time since its lease, on the server's clock), and its progress. */
function trialRow(trial) {
  const running = trial.state === "leased";
  const wait = trial.leased_at !== null ? trial.leased_at - trial.created_at : null;
  const end = trial.finished_at !== null ? trial.finished_at : running ? serverNow() : null;
  const duration = trial.leased_at !== null && end !== null
    ? Math.max(end - trial.leased_at, 0) : null;
  return {...trial, wait, duration, config: trial.config_description,
    progress_share: running ? progressShare(trial.progress) : null,
    progress_text: running ? progressText(trial.progress) : "-"};
}

function progressCell(t) {
  const bar = t.progress_share === null ? null
    : el("progress", {max: 1, value: t.progress_share.toFixed(3)});
  return el("td", {class: "progress"}, bar, bar ? " " : null,
    el("span", {class: "progress-text"}, t.progress_text));
}

function renderTrials() {
  const text = $("#trial-filter").value.trim().toLowerCase();
  const only = $("#state-filter").value;
  const {key, dir} = state.sort;
  const rows = state.trials.map(trialRow)
    .filter((t) => !only || t.state === only)
    .filter((t) => !text || [t.number, t.state, t.generator, t.worker, t.config,
      fmt.score(t.objective), fmt.score(t.dev_score), fmt.share(t.deployed_share),
      fmt.share(t.trainable_share), t.failure_reason, t.progress_text,
      t.fidelity === null || t.fidelity === undefined ? null : fmt.level(t.fidelity),
      ...observationLines(t)]
      .some((v) => v !== null && v !== undefined && String(v).toLowerCase().includes(text)))
    .sort((a, b) => {
      const [u, v] = [a[key], b[key]];
      if (u === v) return a.number - b.number;
      if (u === null || u === undefined) return 1;   // blanks last, whichever direction
      if (v === null || v === undefined) return -1;
      return (u < v ? -1 : 1) * dir;
    });
  $("#trials tbody").replaceChildren(...rows.map((t) => el("tr", {"data-trial": t.number,
      class: t.state},
    el("td", {class: "num"}, t.number),
    el("td", {}, el("span", {class: `badge ${t.state}`}, t.state)),
    el("td", {class: "generator"}, t.generator, t.replicate ? el("span", {class: "replicate",
      title: "the same configuration trained again with another seed (study seed + " +
        `${t.replicate})`}, ` · replicate ${t.replicate}`) : ""),
    el("td", {}, t.worker || "-"),
    el("td", {class: "num"}, fmt.seconds(t.wait)),
    el("td", {class: t.state === "leased" ? "num ran running" : "num ran",
      title: t.state === "leased" ? "running: time since its lease" : null},
    fmt.seconds(t.duration)),
    progressCell(t),
    fidelityCell(t),
    el("td", {class: "num score"}, fmt.score(t.objective)),
    el("td", {class: "num"}, fmt.score(t.dev_score)),
    el("td", {class: "num share deployed"}, fmt.share(t.deployed_share)),
    el("td", {class: "num share trainable"}, fmt.share(t.trainable_share)),
    el("td", {class: "config", title: t.failure_reason || ""}, t.config))));
  $("#trial-count").textContent = `${rows.length} of ${state.trials.length}`;
  for (const th of document.querySelectorAll("#trials th")) {
    th.classList.toggle("sorted", th.dataset.key === key);
    th.dataset.dir = th.dataset.key === key ? (dir > 0 ? "asc" : "desc") : "";
  }
}

// ----------------------------------------------------------------------------- start

function start() {
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("studies?limit=1");
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(error instanceof Unauthorized ? `Token refused: ${error.message}.`
        : error.status === 403 ? "This token has no reader role: use a person's token."
        : `Cannot reach the server: ${error.message}`);
      return;
    }
    navigate();
  });
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin();
  });
  $("#trial-filter").addEventListener("input", renderTrials);
  $("#state-filter").addEventListener("change", renderTrials);
  $("#front-choice").value = state.front;
  $("#front-choice").addEventListener("change", () => {
    state.front = $("#front-choice").value === "model" ? "model" : "observed";
    state.frontDirty = true;
    if (state.route && state.route.view === "study") poll();
  });
  for (const th of document.querySelectorAll("#trials th")) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      state.sort = {key, dir: state.sort.key === key ? -state.sort.dir : 1};
      renderTrials();
    });
  }
  window.addEventListener("hashchange", navigate);
  navigate();
}

start();

// What a model warm start learnt of its sources (the study's transfer report, issue 32).
function transferLearnt(transfer) {
  if (!transfer) return [];
  const rho = Object.entries(transfer.correlations).map(([id, r]) =>
    `study ${id} ${r.toFixed(2)}` + (id in transfer.predictive
      ? ` (check ${transfer.predictive[id].toFixed(2)})` : ""));
  const parts = [`; learnt task correlation: ${rho.join(", ") || "none"}`];
  if (transfer.dropped.length) {
    parts.push(transfer.used
      ? `; guard dropped study ${transfer.dropped.join(", ")}`
      : "; guard dropped every source: its own model proposes, as a cold study's would");
  }
  return [el("span", {class: "transfer", "data-used": String(transfer.used)}, parts.join(""))];
}

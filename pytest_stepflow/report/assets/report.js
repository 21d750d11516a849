/* pytest-stepflow HTML report.
 *
 * Reads the run's data from <script type="application/json" id="stepflow-data"> and builds
 * the page. Everything that comes from tests is put in the page as text (textContent, text
 * nodes, attribute values), never parsed as HTML; links are only relative paths (artifacts)
 * or http(s) URLs (the CI run). No network access, no external resources.
 *
 * A run group's report (DATA.group: a CI pipeline's shards as one run) has the group's
 * aggregate in the header, a table of its shards, each step's shard (S.x, an index into
 * DATA.group.runs) and workers named per shard ("2/4 gw0").
 *
 * Performance marks (performance.getEntriesByName): stepflow-data-parsed,
 * stepflow-first-rows (the steps table shows its first rows), stepflow-ready.
 */
(function () {
  "use strict";
  performance.mark("stepflow-start");
  const DATA = JSON.parse(document.getElementById("stepflow-data").textContent);
  performance.mark("stepflow-data-parsed");

  const RUN = DATA.run;
  const S = DATA.steps;
  const N = S.o.length;
  const OUTCOMES = DATA.outcomes;
  const WORKERS = DATA.workers;
  const FILES = DATA.files;
  const DETAILS = DATA.details;
  const GROUP = DATA.group || null;
  const SHARDS = GROUP ? GROUP.runs : [];
  const COLOURS = {
    passed: "#2f9e44", failed: "#e03131", error: "#9c36b5", skipped: "#adb5bd",
    xfailed: "#4dabf7", xpassed: "#f59f00",
  };
  const DRAW_ORDER = ["passed", "skipped", "xfailed", "xpassed", "error", "failed"];
  const HISTORY_NAMES = {
    p: "passed", f: "failed", e: "error", s: "skipped", x: "xfailed", X: "xpassed",
    "-": "not in this run",
  };
  const ROW_H = 28;
  const OVERSCAN = 8;
  const LANE_H = 22;
  const AXIS_H = 22;

  // ---- derived columns -------------------------------------------------------------------
  const endMs = new Float64Array(N);
  for (let i = 0; i < N; i++) endMs[i] = S.s[i] + S.d[i] / 1000;
  const nonfinal = new Uint8Array(N);
  for (const r of DATA.nonfinal) nonfinal[r] = 1;
  const collect = new Uint8Array(N);
  for (const r of DATA.collect) collect[r] = 1;
  const flakyRow = new Uint8Array(N);
  for (const r of DATA.flaky.rows) flakyRow[r] = 1;
  const attempts = new Map(DATA.attempts);
  const reasons = new Map(DATA.reasons.map((r) => [r[0], DATA.reasonTexts[r[1]]]));
  const flakyInfo = new Map(DATA.flaky.tests.map((t) => [t.nodeid, t]));
  const quarantined = new Map(DATA.quarantine || []);

  function nodeid(i) {
    const f = S.f[i];
    return f >= 0 ? FILES[f] + "::" + S.n[i] : S.n[i];
  }
  function outcomeOf(i) { return OUTCOMES[S.o[i]]; }
  function shardOf(i) { return GROUP ? SHARDS[S.x[i]] : null; }
  function runNumberOf(i) { return GROUP ? SHARDS[S.x[i]].number : RUN.number; }
  function colour(outcome) { return COLOURS[outcome] || "#868e96"; }
  function $(id) { return document.getElementById(id); }

  // ---- safe DOM building -----------------------------------------------------------------
  function isRelativeUrl(u) {
    if (typeof u !== "string" || u === "") return false;
    // No whitespace, controls or backslashes (browsers drop or rewrite them in schemes).
    if (/[\u0000-\u0020\u007f\\]/.test(u)) return false;
    if (u[0] === "/") return false;
    const cut = u.search(/[/?#]/);
    return (cut < 0 ? u : u.slice(0, cut)).indexOf(":") < 0; // a ':' there is a scheme
  }
  function isHttpUrl(u) {
    return typeof u === "string" && /^https?:\/\/[^\u0000-\u0020\u007f\\]+$/i.test(u);
  }

  function h(tag, props, children) {
    const e = document.createElement(tag);
    if (props) {
      for (const k of Object.keys(props)) {
        const v = props[k];
        if (v === null || v === undefined || v === false) continue;
        if (k === "text") e.textContent = String(v);
        else if (k === "cls") e.className = v;
        else if (k === "on") for (const ev of Object.keys(v)) e.addEventListener(ev, v[ev]);
        else if (k === "href") {
          if (isRelativeUrl(v) || isHttpUrl(v)) e.setAttribute("href", v);
        } else if (k === "src") {
          if (isRelativeUrl(v)) e.setAttribute("src", v);
        } else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    if (children) {
      for (const c of children) {
        if (c !== null && c !== undefined && c !== false) e.append(c); // strings: text nodes
      }
    }
    return e;
  }
  const SVG_NS = "http://www.w3.org/2000/svg";
  function s(tag, attrs, children) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, String(attrs[k]));
    for (const c of children || []) e.append(c);
    return e;
  }
  function svgTitle(text) { const t = s("title"); t.textContent = text; return t; }

  // ---- formatting ------------------------------------------------------------------------
  function fmtDur(ms) {
    if (ms === null || ms === undefined || isNaN(ms)) return "-";
    if (ms < 1) return Math.round(ms * 1000) + "\u00b5s";
    if (ms < 1000) return (ms < 10 ? ms.toFixed(1) : String(Math.round(ms))) + "ms";
    const sec = ms / 1000;
    if (sec < 60) return sec.toFixed(2) + "s";
    const min = Math.floor(sec / 60);
    if (min < 60) return min + "m" + String(Math.floor(sec - min * 60)).padStart(2, "0") + "s";
    const hr = Math.floor(min / 60);
    return hr + "h" + String(min - hr * 60).padStart(2, "0") + "m";
  }
  function fmtClock(epochMs) {
    const d = new Date(epochMs);
    if (isNaN(d.getTime())) return "-";
    const p = (n, w) => String(n).padStart(w || 2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()) + "." +
      p(d.getMilliseconds(), 3);
  }
  function fmtIso(iso) {
    if (!iso) return "-";
    const t = Date.parse(iso);
    return isNaN(t) ? String(iso) : fmtClock(t).slice(0, 19) + " (local)";
  }
  function shellQuote(text) { return "'" + String(text).replace(/'/g, "'\\''") + "'"; }
  function logsCommand(i) {
    return "stepflow logs " + shellQuote(nodeid(i)) + " " + runNumberOf(i);
  }
  function pill(outcome, extra) {
    return h("span", { cls: "pill " + outcome + (extra ? " " + extra : ""), text: outcome });
  }

  // ---- header ----------------------------------------------------------------------------
  function countsNode(total, counts) {
    const node = h("div", { cls: "counts", id: "counts" });
    node.append(h("span", { cls: "count", text: total + " steps" }));
    const seen = Object.keys(counts);
    const order = OUTCOMES.filter((o) => seen.indexOf(o) >= 0)
      .concat(seen.filter((o) => OUTCOMES.indexOf(o) < 0));
    for (const o of order) {
      const dot = h("span", { cls: "dot" });
      dot.style.background = colour(o);
      node.append(h("button", {
        type: "button", cls: "count", "data-outcome": o, title: "show only " + o,
        on: { click: () => setFilter("outcome", o) },
      }, [dot, counts[o] + " " + o]));
    }
    return node;
  }

  function countsText(counts) {
    const parts = OUTCOMES.filter((o) => counts[o]).map((o) => counts[o] + " " + o);
    for (const o of Object.keys(counts)) if (OUTCOMES.indexOf(o) < 0 && counts[o]) parts.push(counts[o] + " " + o);
    return parts.join(", ") || "no tests";
  }

  function shardState() {
    const expected = Math.max(GROUP.expectedShards || 0, SHARDS.length);
    const parts = [SHARDS.length + (GROUP.expectedShards ? " of " + GROUP.expectedShards : "") +
      " shard" + (expected === 1 ? "" : "s") + " recorded"];
    if (GROUP.running) parts.push(GROUP.running + " of " + expected + " still running");
    if (GROUP.missingShards) parts.push(GROUP.missingShards + " of " + expected + " missing");
    return h("span", { id: "shard-state", text: parts.join(" \u00b7 ") });
  }

  function shardsTable() {
    const head = ["Shard", "Run", "Host", "Status", "Duration", "Started", "Outcomes"];
    const body = SHARDS.map((r, k) => h("tr", {
      "data-run": String(r.number), "data-shard": r.label, title: "show only the steps of " + r.label,
      on: { click: () => setFilter("shard", String(k)) },
    }, [
      h("td", { cls: "mono", text: r.label }),
      h("td", { text: "#" + r.number }),
      h("td", { text: (r.user ? r.user + "@" : "") + r.host }),
      h("td", null, [h("span", { cls: "pill " + r.status, text: r.status, title: r.error || null })]),
      h("td", { text: r.duration === null ? (r.status === "running" ? "still running" : "-") : fmtDur(r.duration * 1000) }),
      h("td", { text: fmtIso(r.startedAt) }),
      h("td", { text: r.total + " steps: " + countsText(r.counts) }),
    ]));
    return h("table", { cls: "shards", id: "shards" }, [
      h("thead", null, [h("tr", null, head.map((t) => h("th", { text: t })))]),
      h("tbody", null, body),
    ]);
  }

  function renderHeader() {
    const header = $("header");
    const title = GROUP ? "Run group " + GROUP.id : "Run #" + RUN.number + (RUN.name ? " \u00b7 " + RUN.name : "");
    const status = GROUP ? GROUP.status : RUN.status;
    header.append(h("div", { cls: "title-line" }, [
      h("h1", { id: "run-title", text: title }),
      h("span", { cls: "pill " + status, id: "run-status", text: status }),
      GROUP ? countsNode(GROUP.total, GROUP.counts) : countsNode(RUN.total, RUN.counts),
    ]));

    const rows = [];
    const add = (label, value) => {
      if (value === null || value === undefined || value === "") return;
      rows.push(h("dt", { text: label }), h("dd", null, Array.isArray(value) ? value : [value]));
    };
    if (GROUP) {
      add("started", fmtIso(GROUP.startedAt));
      add("duration", GROUP.duration === null ? (GROUP.running ? "still running" : null)
        : fmtDur(GROUP.duration * 1000) + " wall time (first start to last end)");
      add("shards", shardState());
    } else {
      add("started", fmtIso(RUN.startedAt));
      add("duration", RUN.duration === null ? (RUN.status === "running" ? "still running" : null)
        : fmtDur(RUN.duration * 1000));
      if (RUN.error) add("error", h("span", { cls: "error-message", text: RUN.error }));
      add("exit code", RUN.exitCode === null ? null : String(RUN.exitCode));
      if (RUN.runGroup) {
        add("run group", h("span", { id: "run-group", text: RUN.runGroup + (RUN.shard ? ", shard " + RUN.shard : "") }));
      } else if (RUN.shard) add("shard", RUN.shard);
    }
    const tags = Object.keys(RUN.tags).map((k) =>
      h("span", { cls: "tag", text: RUN.tags[k] === "" || RUN.tags[k] === null ? k : k + "=" + RUN.tags[k] }));
    add("tags", tags.length ? tags : null);
    const git = RUN.git;
    if (git.branch || git.commit) {
      add("git", (git.branch || "(detached)") + (git.commit ? " @ " + git.commit.slice(0, 12) : "") +
        (git.dirty ? " (uncommitted changes)" : ""));
    }
    const ci = RUN.ci;
    if (Object.keys(ci).length) {
      const parts = [ci.provider || "CI"];
      for (const k of ["job", "run_number", "pull_request"]) {
        if (ci[k]) parts.push(k.replace("_", " ") + " " + ci[k]);
      }
      const items = [parts.join(" \u00b7 ")];
      if (isHttpUrl(ci.url)) {
        items.push(" ", h("a", {
          id: "ci-link", href: ci.url, target: "_blank", rel: "noopener noreferrer", text: "CI run",
        }));
      }
      add("CI", items);
    }
    const v = RUN.versions;
    const versions = [];
    if (v.python) versions.push("Python " + v.python + (v.python_implementation && v.python_implementation !== "CPython" ? " (" + v.python_implementation + ")" : ""));
    if (v.pytest) versions.push("pytest " + v.pytest);
    if (v.stepflow) versions.push("pytest-stepflow " + v.stepflow);
    if (v.platform) versions.push(v.platform);
    add("versions", versions.join(" \u00b7 "));
    if (GROUP) {
      add("workers", WORKERS.length ? WORKERS.join(", ") : null);
    } else {
      add("host", (RUN.user ? RUN.user + "@" : "") + RUN.host + " pid " + RUN.pid);
      add("workers", WORKERS.length ? WORKERS.join(", ") : null);
      add("command", RUN.command.join(" "));
      const stats = Object.keys(RUN.writerStats).map((k) => {
        const value = RUN.writerStats[k];
        return k + " " + (typeof value === "object" ? JSON.stringify(value) : String(value));
      });
      add("writer", stats.length ? stats.join(" \u00b7 ") : null);
      add("run id", RUN.id);
    }
    if (DATA.runArtifacts.length) add("artifacts", artifactNodes(DATA.runArtifacts));
    header.append(h("dl", { cls: "meta", id: "run-meta" }, rows));
    if (GROUP) header.append(shardsTable());
  }

  // ---- steps table -----------------------------------------------------------------------
  const state = { text: "", outcome: "", shard: "", worker: "", marker: "", flaky: false, sort: "idx", dir: 1 };
  let view = new Int32Array(N);
  for (let i = 0; i < N; i++) view[i] = i;
  let selected = -1;
  let searchText = null;
  const historyTemplates = [];
  const pool = [];
  const COLUMNS = [
    ["idx", "#"], ["test", "Test"], ["outcome", "Outcome"], ["worker", "Worker"],
    ["duration", "Duration"], ["start", "Start"], ["history", "History"],
  ];

  function searchable() {
    if (!searchText) {
      searchText = new Array(N);
      for (let i = 0; i < N; i++) {
        const r = reasons.get(i);
        searchText[i] = (r ? nodeid(i) + "\n" + r : nodeid(i)).toLowerCase();
      }
    }
    return searchText;
  }

  function buildFilters() {
    const outcome = $("f-outcome");
    outcome.append(h("option", { value: "", text: "all outcomes" }));
    outcome.append(h("option", { value: "failures", text: "failed + error" }));
    const present = new Uint32Array(OUTCOMES.length);
    for (let i = 0; i < N; i++) present[S.o[i]]++;
    OUTCOMES.forEach((o, k) => {
      if (present[k]) outcome.append(h("option", { value: o, text: o + " (" + present[k] + ")" }));
    });
    const shard = $("f-shard");
    if (GROUP) {
      shard.hidden = false;
      shard.append(h("option", { value: "", text: "all shards" }));
      SHARDS.forEach((r, k) => shard.append(h("option", { value: String(k), text: r.label + " (#" + r.number + ")" })));
      shard.addEventListener("change", () => setFilter("shard", shard.value));
      $("table").classList.add("group");
    }
    const worker = $("f-worker");
    worker.append(h("option", { value: "", text: "all workers" }));
    WORKERS.forEach((w, k) => worker.append(h("option", { value: String(k), text: w })));
    const marker = $("f-marker");
    marker.append(h("option", { value: "", text: "all markers" }));
    const names = new Set();
    for (const set of DATA.markerSets) for (const m of set) names.add(m);
    [...names].sort().forEach((m) => marker.append(h("option", { value: m, text: m })));
    marker.disabled = names.size === 0;

    let timer = 0;
    $("f-search").addEventListener("input", (ev) => {
      clearTimeout(timer);
      const value = ev.target.value;
      timer = setTimeout(() => setFilter("text", value), 120);
    });
    outcome.addEventListener("change", () => setFilter("outcome", outcome.value));
    worker.addEventListener("change", () => setFilter("worker", worker.value));
    marker.addEventListener("change", () => setFilter("marker", marker.value));
    $("f-flaky").addEventListener("change", (ev) => setFilter("flaky", ev.target.checked));

    const head = $("thead");
    for (const [key, label] of COLUMNS) {
      head.append(h("div", {
        role: "columnheader", "data-sort": key, title: "sort by " + label.toLowerCase(),
        on: { click: () => setSort(key) },
      }, [label]));
    }
  }

  function setFilter(key, value) {
    state[key] = value;
    if (key === "outcome") $("f-outcome").value = value;
    if (key === "shard") $("f-shard").value = value;
    applyFilters();
  }

  function setSort(key) {
    if (state.sort === key) state.dir = -state.dir;
    else { state.sort = key; state.dir = key === "duration" || key === "history" ? -1 : 1; }
    sortView();
    $("rows").scrollTop = 0;
    renderRows();
  }

  function applyFilters() {
    const q = state.text.trim().toLowerCase();
    const text = q ? searchable() : null;
    let outcomes = null;
    if (state.outcome) {
      outcomes = new Uint8Array(OUTCOMES.length);
      OUTCOMES.forEach((o, k) => {
        if (o === state.outcome || (state.outcome === "failures" && (o === "failed" || o === "error"))) outcomes[k] = 1;
      });
    }
    const worker = state.worker === "" ? -1 : Number(state.worker);
    const shard = state.shard === "" || !GROUP ? -1 : Number(state.shard);
    let markers = null;
    if (state.marker) {
      markers = new Uint8Array(DATA.markerSets.length);
      DATA.markerSets.forEach((set, k) => { if (set.indexOf(state.marker) >= 0) markers[k] = 1; });
    }
    const out = new Int32Array(N);
    let n = 0;
    for (let i = 0; i < N; i++) {
      if (outcomes && !outcomes[S.o[i]]) continue;
      if (worker >= 0 && S.w[i] !== worker) continue;
      if (shard >= 0 && S.x[i] !== shard) continue;
      if (markers && !markers[S.m[i]]) continue;
      if (state.flaky && !flakyRow[i]) continue;
      if (text && text[i].indexOf(q) < 0) continue;
      out[n++] = i;
    }
    view = out.slice(0, n);
    sortView();
    $("rows").scrollTop = 0;
    renderRows();
  }

  function historyFailures(i) {
    const text = DATA.histories[S.h[i]];
    let n = 0;
    for (const c of text) if (c === "f" || c === "e") n++;
    return n;
  }

  function sortView() {
    const dir = state.dir;
    let key;
    switch (state.sort) {
      case "test": {
        const ids = new Array(N);
        for (const i of view) ids[i] = nodeid(i);
        key = (a, b) => (ids[a] < ids[b] ? -1 : ids[a] > ids[b] ? 1 : a - b) * dir;
        break;
      }
      case "outcome": key = (a, b) => (S.o[a] - S.o[b] || a - b) * dir; break;
      case "worker": key = (a, b) => (S.w[a] - S.w[b] || S.s[a] - S.s[b] || a - b) * dir; break;
      case "duration": key = (a, b) => (S.d[a] - S.d[b] || a - b) * dir; break;
      case "start": key = (a, b) => (S.s[a] - S.s[b] || a - b) * dir; break;
      case "history": key = (a, b) => (historyFailures(a) - historyFailures(b) || a - b) * dir; break;
      default: key = (a, b) => (a - b) * dir;
    }
    view.sort(key);
    for (const cell of $("thead").children) {
      if (cell.dataset.sort === state.sort) cell.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
      else cell.removeAttribute("aria-sort");
    }
  }

  function historyNode(i) {
    const k = S.h[i];
    let t = historyTemplates[k];
    if (!t) {
      const text = DATA.histories[k];
      t = h("span", { cls: "hist" });
      for (let j = 0; j < text.length; j++) {
        const label = (DATA.historyLabels || [])[j] || "run #" + DATA.historyRuns[j];
        t.append(h("i", { cls: text[j], title: label + ": " + (HISTORY_NAMES[text[j]] || text[j]) }));
      }
      historyTemplates[k] = t;
    }
    return t.cloneNode(true);
  }

  function makeRow() {
    const c = {
      idx: h("span", { cls: "c-idx", role: "cell" }),
      test: h("span", { cls: "c-test", role: "cell" }),
      file: h("span", { cls: "file" }),
      name: h("span", { cls: "name" }),
      badges: h("span", { cls: "badges" }),
      out: h("span", { cls: "c-out", role: "cell" }),
      worker: h("span", { cls: "c-worker", role: "cell" }),
      dur: h("span", { cls: "c-dur", role: "cell" }),
      start: h("span", { cls: "c-start", role: "cell" }),
      hist: h("span", { cls: "c-hist", role: "cell" }),
    };
    c.test.append(c.file, c.name, c.badges);
    const row = h("div", { cls: "row", role: "row", tabindex: "0" },
      [c.idx, c.test, c.out, c.worker, c.dur, c.start, c.hist]);
    row.cells_ = c;
    row.step_ = -1;
    row.addEventListener("click", () => openDetail(row.step_));
    row.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); openDetail(row.step_); }
    });
    return row;
  }

  function fillRow(row, i) {
    row.classList.toggle("selected", i === selected);
    if (row.step_ === i) return;
    row.step_ = i;
    const c = row.cells_;
    const o = outcomeOf(i);
    row.dataset.row = String(i);
    row.dataset.outcome = o;
    row.dataset.worker = WORKERS[S.w[i]];
    if (GROUP) row.dataset.shard = shardOf(i).label;
    c.idx.textContent = String(i + 1);
    const f = S.f[i];
    c.file.textContent = f >= 0 ? FILES[f] + "::" : "";
    c.name.textContent = S.n[i];
    const reason = reasons.get(i);
    c.test.title = nodeid(i) + (reason ? "\n" + reason : "");
    c.badges.replaceChildren();
    if (flakyRow[i]) {
      const info = flakyInfo.get(nodeid(i));
      c.badges.append(h("span", {
        cls: "badge flaky", text: "flaky",
        title: info ? flakyTitle(info) : "flaky",
      }));
    }
    if (quarantined.has(nodeid(i))) {
      c.badges.append(h("span", {
        cls: "badge quarantined", text: "quarantined",
        title: "quarantined: " + quarantined.get(nodeid(i)) + " (stepflow quarantine ls)",
      }));
    }
    const attempt = attempts.get(i);
    if (attempt) c.badges.append(h("span", { cls: "badge rerun", text: "attempt " + attempt }));
    if (nonfinal[i]) c.badges.append(h("span", { cls: "badge rerun", text: "rerun" }));
    if (collect[i]) c.badges.append(h("span", { cls: "badge rerun", text: "collection" }));
    c.out.replaceChildren(pill(o));
    c.worker.textContent = WORKERS[S.w[i]];
    c.dur.textContent = fmtDur(S.d[i] / 1000);
    c.start.textContent = "+" + fmtDur(S.s[i]);
    c.hist.replaceChildren(historyNode(i));
  }

  function flakyTitle(info) {
    return "flaky: " + info.flips + " flips, failed " + info.failures + " of " + info.runs +
      " runs" + (info.sameCommit ? "; passed and failed on one commit" : "") +
      " (rules of `stepflow flaky`, last " + DATA.flaky.window + " runs)";
  }

  function renderRows() {
    const box = $("rows");
    const total = view.length;
    $("rows-spacer").style.height = total * ROW_H + "px";
    const height = box.clientHeight || 600;
    const first = Math.max(0, Math.min(Math.floor(box.scrollTop / ROW_H) - OVERSCAN,
      Math.max(total - 1, 0)));
    const count = Math.ceil(height / ROW_H) + 2 * OVERSCAN;
    const body = $("rows-body");
    while (pool.length < count) {
      const row = makeRow();
      pool.push(row);
      body.append(row);
    }
    body.style.transform = "translateY(" + first * ROW_H + "px)";
    for (let k = 0; k < pool.length; k++) {
      const row = pool[k];
      const v = first + k;
      if (v >= total) {
        row.hidden = true;
        continue;
      }
      row.hidden = false;
      fillRow(row, view[v]);
    }
    let empty = $("rows-empty");
    if (!total && !empty) {
      empty = h("div", { id: "rows-empty", cls: "empty", text: "No step matches these filters." });
      body.append(empty);
    } else if (total && empty) empty.remove();
    const counter = $("steps-count");
    counter.textContent = total === N ? N + " steps" : total + " of " + N + " steps";
    counter.dataset.count = String(total);
  }

  let scrollPending = false;
  function onScroll() {
    if (scrollPending) return;
    scrollPending = true;
    requestAnimationFrame(() => { scrollPending = false; renderRows(); });
  }

  // ---- step detail -----------------------------------------------------------------------
  function artifactNodes(list) {
    const thumbs = h("div", { cls: "thumbs" });
    const links = h("ul", { cls: "artifact-list" });
    for (const a of list) {
      const label = a.name + " (" + (a.mime || "unknown type") + ", " + a.size + " bytes)";
      if (a.image && isRelativeUrl(a.href)) {
        thumbs.append(h("a", { cls: "thumb", href: a.href, target: "_blank", rel: "noopener" }, [
          h("img", { src: a.href, alt: a.name, loading: "lazy" }),
          h("div", { cls: "cap", text: label }),
        ]));
      } else if (isRelativeUrl(a.href)) {
        links.append(h("li", null, [h("a", { href: a.href, target: "_blank", rel: "noopener", text: a.name }),
          h("span", { cls: "muted", text: " " + label.slice(a.name.length) })]));
      } else {
        links.append(h("li", null, [label + " \u2014 in the artifact store at " + a.path]));
      }
    }
    const out = [];
    if (thumbs.childElementCount) out.push(thumbs);
    if (links.childElementCount) out.push(links);
    return out;
  }

  function kvTable(rows, cls) {
    return h("table", { cls: "kv" + (cls ? " " + cls : "") }, [h("tbody", null, rows.map((r) =>
      h("tr", null, [h("th", null, [r[0]]), h("td", null, Array.isArray(r[1]) ? r[1] : [r[1]])])))]);
  }

  function section(body, title, nodes, id) {
    body.append(h("h3", { text: title }));
    const box = h("div", { cls: "section", id: id || null }, nodes);
    body.append(box);
    return box;
  }

  function clipNote(i, what, length) {
    return h("div", { cls: "note", text: what + " clipped: the first " + DATA.limits.clip +
      " of " + length + " characters are shown; the full text: " + logsCommand(i) });
  }

  function subTree(rows) {
    const root = h("ul", { cls: "tree", id: "detail-substeps" });
    const items = new Map();
    for (const r of rows) {
      const [id, parent, kind, phase, title, outcome, message, , durUs, params] = r;
      const li = h("li", { "data-substep": String(id) }, [
        pill(outcome), " ", h("span", { text: title }),
        h("span", { cls: "muted", text: " " + kind + ", " + phase + ", " + fmtDur(durUs / 1000) }),
      ]);
      const keys = Object.keys(params || {});
      if (keys.length) li.append(h("span", { cls: "muted", text: " " + keys.map((k) => k + "=" + params[k]).join(", ") }));
      if (message) li.append(h("pre", { cls: "substep-message", text: message }));
      items.set(id, li);
      const host = parent !== null && items.get(parent);
      if (host) {
        let ul = host.querySelector(":scope > ul");
        if (!ul) { ul = h("ul"); host.append(ul); }
        ul.append(li);
      } else root.append(li);
    }
    return root;
  }

  function openDetail(i) {
    if (!(i >= 0 && i < N)) return;
    selected = i;
    for (const row of pool) row.classList.toggle("selected", row.step_ === i);
    const d = DETAILS[String(i)] || null;
    const body = $("detail-body");
    body.replaceChildren();
    const o = outcomeOf(i);
    body.append(h("h2", { id: "detail-title", text: nodeid(i) }));
    const shard = shardOf(i);
    const rows = [
      ["outcome", [pill(o)]],
      ["worker", WORKERS[S.w[i]]],
      ["attempt", String(attempts.get(i) || 1) + (nonfinal[i] ? " (re-run later)" : "")],
      ["duration", fmtDur(S.d[i] / 1000)],
      ["started", fmtClock(DATA.t0 * 1000 + S.s[i]) + " (+" + fmtDur(S.s[i]) + " into the run)"],
    ];
    if (shard) {
      rows.splice(1, 0, ["shard", h("span", {
        id: "detail-shard", text: shard.label + " (run #" + shard.number + " on " + shard.host + ")",
      })]);
    }
    if (d && d.phases && d.phases.length) {
      rows.push(["phases", d.phases.map((p) => p[0] + " " + (p[1] || "-") + " " +
        fmtDur(p[2] === null ? null : p[2] / 1000)).join(" \u00b7 ")]);
    }
    const markers = DATA.markerSets[S.m[i]];
    if (markers.length) rows.push(["markers", markers.join(", ")]);
    if (d && d.line !== undefined) rows.push(["line", String(d.line)]);
    const info = flakyInfo.get(nodeid(i));
    if (info) rows.push(["flaky", flakyTitle(info)]);
    if (quarantined.has(nodeid(i))) rows.push(["quarantined", quarantined.get(nodeid(i))]);
    rows.push(["history", [historyNode(i), " oldest \u2192 newest"]]);
    body.append(kvTable(rows));
    const reason = reasons.get(i);
    if (reason) section(body, "Reason", [h("pre", { cls: "reason", text: reason })], "detail-reason");
    if (d && d.omitted) {
      body.append(h("div", { cls: "note", text: "Output and logs of this step (" + d.omitted +
        " characters) were left out: the report's budget for embedded text was used by other steps. " +
        "See them with: " + logsCommand(i) }));
    }
    const clipped = (d && d.clip) || {};
    for (const [key, title, name, id] of [["tb", "Traceback", "traceback", "detail-traceback"],
      ["out", "Captured stdout", "stdout", "detail-stdout"], ["err", "Captured stderr", "stderr", "detail-stderr"]]) {
      if (!d || !d[key]) continue;
      const nodes = [h("pre", { cls: name, text: d[key] })];
      if (clipped[name]) nodes.push(clipNote(i, name, clipped[name]));
      section(body, title, nodes, id);
    }
    if (d && d.logs) {
      const start = S.s[i];
      const table = h("table", { cls: "kv logs", id: "detail-logs" }, [h("tbody", null, d.logs.map((g) =>
        h("tr", { cls: "lvl-" + g[2] }, [
          h("td", { text: "+" + fmtDur(Math.max(g[1] - start, 0)) }),
          h("td", { text: g[0] }), h("td", { text: g[2] }), h("td", { text: g[3] }),
          h("td", { text: g[4] }),
          h("td", { cls: "muted", text: g[5] ? g[5] + (g[6] !== null ? ":" + g[6] : "") : "" }),
        ])))]);
      const nodes = [table];
      if (d.logsTotal) {
        nodes.push(h("div", { cls: "note", text: "The first " + d.logs.length + " of " + d.logsTotal +
          " log records are shown; all of them: " + logsCommand(i) }));
      }
      section(body, "Log records", nodes);
    }
    if (d && d.sub) section(body, "Sub-steps", [subTree(d.sub)]);
    if (d && d.params) {
      section(body, "Parameters", [kvTable(Object.keys(d.params).map((k) => [k, d.params[k]]))]);
    }
    if (d && d.props) section(body, "Properties", [kvTable(d.props, "props")], "detail-properties");
    if (d && d.art) section(body, "Artifacts", artifactNodes(d.art), "detail-artifacts");
    if (!d) {
      body.append(h("p", { cls: "muted", text: "Nothing else was recorded for this step: no traceback, output, log records, sub-steps, properties or artifacts." }));
    }
    body.append(h("p", { cls: "muted" }, ["Everything recorded about this test: ",
      h("code", { text: logsCommand(i) })]));
    const panel = $("detail");
    panel.dataset.row = String(i);
    panel.hidden = false;
    body.scrollTop = 0;
    timeline.draw();
  }

  function closeDetail() {
    $("detail").hidden = true;
    selected = -1;
    for (const row of pool) row.classList.remove("selected");
    timeline.draw();
  }

  // ---- timeline --------------------------------------------------------------------------
  const timeline = (function () {
    const canvas = $("tl-canvas");
    const box = $("tl-canvas-box");
    const ctx = canvas.getContext("2d");
    const lanes = WORKERS.map(() => []);
    for (let i = 0; i < N; i++) lanes[S.w[i]].push(i);
    const laneMax = new Float64Array(lanes.length);
    const sorted = lanes.map((lane, k) => {
      const arr = Int32Array.from(lane);
      arr.sort((a, b) => S.s[a] - S.s[b] || a - b);
      for (const i of arr) laneMax[k] = Math.max(laneMax[k], S.d[i] / 1000);
      return arr;
    });
    let span = 1;
    for (let i = 0; i < N; i++) span = Math.max(span, endMs[i]);
    span *= 1.01;
    let a = 0;
    let b = span;
    let width = 300;
    let hover = -1;
    let drag = null;
    let pending = false;
    const drawOrder = DRAW_ORDER.map((o) => OUTCOMES.indexOf(o)).filter((k) => k >= 0);
    OUTCOMES.forEach((o, k) => { if (drawOrder.indexOf(k) < 0) drawOrder.unshift(k); });

    function lowerStart(arr, t) { // first index with start >= t
      let lo = 0;
      let hi = arr.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (S.s[arr[mid]] < t) lo = mid + 1; else hi = mid;
      }
      return lo;
    }

    function size() {
      width = Math.max(box.clientWidth, 100);
      const height = AXIS_H + LANE_H * Math.max(lanes.length, 1) + 2;
      const dpr = window.devicePixelRatio || 1;
      canvas.width = Math.round(width * dpr);
      canvas.height = Math.round(height * dpr);
      canvas.style.height = height + "px";
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    }

    function niceStep(range) {
      const raw = range / 8;
      const p = Math.pow(10, Math.floor(Math.log10(raw)));
      for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
      return 10 * p;
    }

    function draw() {
      if (pending) return;
      pending = true;
      requestAnimationFrame(drawNow);
    }

    function drawNow() {
      pending = false;
      const height = AXIS_H + LANE_H * Math.max(lanes.length, 1) + 2;
      ctx.clearRect(0, 0, width, height);
      const scale = width / (b - a);
      // axis
      ctx.fillStyle = "#6c757d";
      ctx.strokeStyle = "#e9ecef";
      ctx.font = "10px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      const step = niceStep(b - a);
      for (let t = Math.ceil(a / step) * step; t <= b; t += step) {
        const x = Math.round((t - a) * scale) + 0.5;
        ctx.beginPath();
        ctx.moveTo(x, AXIS_H - 4);
        ctx.lineTo(x, height);
        ctx.stroke();
        ctx.fillText(t <= 0 ? "0" : fmtDur(t), x + 3, AXIS_H / 2);
      }
      for (let k = 0; k <= lanes.length; k++) {
        const y = AXIS_H + k * LANE_H + 0.5;
        ctx.beginPath();
        ctx.moveTo(0, y);
        ctx.lineTo(width, y);
        ctx.stroke();
      }
      // bars: per lane, per outcome, touching bars merged into one rectangle
      const rects = OUTCOMES.map(() => []);
      for (let k = 0; k < sorted.length; k++) {
        const arr = sorted[k];
        const y = AXIS_H + k * LANE_H + 3;
        for (const r of rects) r.length = 0;
        for (let j = lowerStart(arr, a - laneMax[k]); j < arr.length; j++) {
          const i = arr[j];
          if (S.s[i] > b) break;
          if (endMs[i] < a) continue;
          const x0 = Math.floor((S.s[i] - a) * scale);
          let x1 = Math.ceil((endMs[i] - a) * scale);
          if (x1 - x0 > 4) x1 -= 1; // a gap between wide bars
          if (x1 <= x0) x1 = x0 + 1;
          const list = rects[S.o[i]];
          const n = list.length;
          if (n && list[n - 1] >= x0) { if (x1 > list[n - 1]) list[n - 1] = x1; } else list.push(x0, x1);
        }
        for (const o of drawOrder) {
          const list = rects[o];
          if (!list.length) continue;
          ctx.fillStyle = colour(OUTCOMES[o]);
          for (let q = 0; q < list.length; q += 2) ctx.fillRect(list[q], y, list[q + 1] - list[q], LANE_H - 6);
        }
      }
      for (const [i, c] of [[selected, "#1c7ed6"], [hover, "#212529"]]) {
        const r = barRect(i);
        if (!r) continue;
        ctx.strokeStyle = c;
        ctx.lineWidth = 2;
        ctx.strokeRect(r.x - 1, r.y - 1, r.w + 2, r.h + 2);
        ctx.lineWidth = 1;
      }
      canvas.dataset.viewStart = a.toFixed(3);
      canvas.dataset.viewEnd = b.toFixed(3);
    }

    function barRect(i) {
      if (!(i >= 0 && i < N)) return null;
      const scale = width / (b - a);
      const x0 = (S.s[i] - a) * scale;
      const x1 = Math.max((endMs[i] - a) * scale, x0 + 1);
      if (x1 < 0 || x0 > width) return null;
      return { x: x0, y: AXIS_H + S.w[i] * LANE_H + 3, w: x1 - x0, h: LANE_H - 6 };
    }

    function barAt(px, py) {
      const k = Math.floor((py - AXIS_H) / LANE_H);
      if (k < 0 || k >= sorted.length) return -1;
      const scale = width / (b - a);
      const t = a + px / scale;
      const tol = 3 / scale;
      const arr = sorted[k];
      let best = -1;
      let bestDist = Infinity;
      for (let j = lowerStart(arr, t + tol + 1e-9) - 1; j >= 0; j--) {
        const i = arr[j];
        if (S.s[i] < t - tol - laneMax[k]) break;
        const dist = t < S.s[i] ? S.s[i] - t : t > endMs[i] ? t - endMs[i] : 0;
        if (dist <= tol && dist < bestDist) {
          best = i;
          bestDist = dist;
          if (dist === 0) break;
        }
      }
      return best;
    }

    function setView(na, nb) {
      const minWidth = 0.05;
      let w = Math.max(Math.min(nb - na, span * 1.5), minWidth);
      let start = na;
      if (start < -span * 0.25) start = -span * 0.25;
      if (start + w > span * 1.25) start = span * 1.25 - w;
      a = start;
      b = start + w;
      draw();
    }

    function zoomAt(px, factor) {
      const t = a + (px / width) * (b - a);
      const w = (b - a) * factor;
      setView(t - (px / width) * w, t - (px / width) * w + w);
    }

    function local(ev) {
      const r = canvas.getBoundingClientRect();
      return [ev.clientX - r.left, ev.clientY - r.top];
    }

    const tooltip = $("tooltip");
    function showTooltip(i, ev) {
      if (i < 0) { tooltip.hidden = true; return; }
      tooltip.replaceChildren(
        h("div", { cls: "t-id", text: nodeid(i) }),
        h("div", null, [pill(outcomeOf(i)), " " + fmtDur(S.d[i] / 1000) + " \u00b7 " +
          WORKERS[S.w[i]] + " \u00b7 +" + fmtDur(S.s[i])]),
      );
      tooltip.hidden = false;
      const x = Math.min(ev.clientX + 14, window.innerWidth - tooltip.offsetWidth - 8);
      const y = ev.clientY + 16 + tooltip.offsetHeight > window.innerHeight
        ? ev.clientY - tooltip.offsetHeight - 10 : ev.clientY + 16;
      tooltip.style.left = Math.max(x, 4) + "px";
      tooltip.style.top = Math.max(y, 4) + "px";
    }

    canvas.addEventListener("mousedown", (ev) => {
      if (ev.button !== 0) return;
      drag = { x: ev.clientX, a, b, moved: false };
      ev.preventDefault();
    });
    window.addEventListener("mousemove", (ev) => {
      if (drag) {
        const dx = ev.clientX - drag.x;
        if (Math.abs(dx) > 3) { drag.moved = true; canvas.classList.add("dragging"); }
        if (drag.moved) {
          const shift = (dx / width) * (drag.b - drag.a);
          setView(drag.a - shift, drag.b - shift);
          tooltip.hidden = true;
        }
        return;
      }
      if (ev.target !== canvas) return;
      const [x, y] = local(ev);
      const i = barAt(x, y);
      if (i !== hover) { hover = i; draw(); }
      canvas.style.cursor = i >= 0 ? "pointer" : "";
      showTooltip(i, ev);
    });
    window.addEventListener("mouseup", (ev) => {
      if (!drag) return;
      const wasClick = !drag.moved;
      drag = null;
      canvas.classList.remove("dragging");
      if (wasClick && ev.target === canvas) {
        const [x, y] = local(ev);
        const i = barAt(x, y);
        if (i >= 0) openDetail(i);
      }
    });
    canvas.addEventListener("mouseleave", () => {
      if (hover >= 0) { hover = -1; draw(); }
      tooltip.hidden = true;
    });
    canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const [x] = local(ev);
      zoomAt(x, ev.deltaY < 0 ? 1 / 1.25 : 1.25);
    }, { passive: false });
    $("tl-zoom-in").addEventListener("click", () => zoomAt(width / 2, 1 / 1.6));
    $("tl-zoom-out").addEventListener("click", () => zoomAt(width / 2, 1.6));
    $("tl-reset").addEventListener("click", () => setView(0, span));

    function init() {
      const labels = $("lanes");
      sorted.forEach((arr, k) => {
        let busy = 0;
        for (const i of arr) busy += S.d[i] / 1000;
        labels.append(h("div", {
          cls: "lane", role: "listitem", "data-worker": WORKERS[k],
          "data-shard": GROUP && arr.length ? shardOf(arr[0]).label : null,
          title: WORKERS[k] + ": " + arr.length + " steps, busy " + fmtDur(busy) + " (" +
            Math.round((100 * busy) / (span / 1.01)) + "% of the run's span)",
        }, [WORKERS[k], h("span", { cls: "muted", text: String(arr.length) })]));
      });
      const legend = $("legend");
      const present = new Set();
      for (let i = 0; i < N; i++) present.add(S.o[i]);
      OUTCOMES.forEach((o, k) => {
        if (!present.has(k)) return;
        const sw = h("span", { cls: "swatch" });
        sw.style.background = colour(o);
        legend.append(h("span", { "data-outcome": o }, [sw, o]));
      });
      if (!N) labels.append(h("div", { cls: "lane muted", text: "no steps" }));
      size();
      drawNow();
      window.addEventListener("resize", () => { size(); draw(); });
    }

    return { init, draw, barRect, canvas, view: () => [a, b], setView };
  })();

  // ---- charts ----------------------------------------------------------------------------
  function finalTests() {
    const out = [];
    for (let i = 0; i < N; i++) if (!nonfinal[i] && !collect[i]) out.push(i);
    return out;
  }

  function histogram(rows) {
    const box = $("chart-histogram");
    if (!rows.length) { box.append(h("p", { cls: "muted", text: "No tests." })); return; }
    let lo = Infinity;
    let hi = 0;
    for (const i of rows) {
      const ms = S.d[i] / 1000;
      if (ms > 0) lo = Math.min(lo, ms);
      hi = Math.max(hi, ms);
    }
    if (!isFinite(lo)) lo = 0.001;
    const per = 4;
    const d0 = Math.floor(Math.log10(Math.max(lo, 0.001)));
    let d1 = Math.ceil(Math.log10(Math.max(hi, 0.001)));
    if (d1 <= d0) d1 = d0 + 1;
    const bins = new Array((d1 - d0) * per).fill(0);
    for (const i of rows) {
      const ms = S.d[i] / 1000;
      const k = ms > 0 ? Math.floor((Math.log10(ms) - d0) * per) : 0;
      bins[Math.min(Math.max(k, 0), bins.length - 1)]++;
    }
    const W = 360, H = 170, L = 36, B = 22, T = 8;
    const max = Math.max(...bins);
    const bw = (W - L - 4) / bins.length;
    const svg = s("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "duration histogram", id: "histogram" });
    svg.append(s("line", { x1: L, y1: H - B, x2: W - 4, y2: H - B, stroke: "#adb5bd" }));
    bins.forEach((n, k) => {
      const from = Math.pow(10, d0 + k / per);
      const to = Math.pow(10, d0 + (k + 1) / per);
      const hgt = max ? ((H - B - T) * n) / max : 0;
      const rect = s("rect", { x: L + k * bw + 1, y: H - B - hgt, width: Math.max(bw - 2, 1), height: hgt, fill: "#4dabf7", "data-count": n });
      rect.append(svgTitle(fmtDur(from) + " \u2013 " + fmtDur(to) + ": " + n + " tests"));
      svg.append(rect);
    });
    for (let d = 0; d <= d1 - d0; d++) {
      const x = L + d * per * bw;
      const anchor = d === 0 ? "start" : d === d1 - d0 ? "end" : "middle";
      svg.append(s("text", { x: x, y: H - 6, "text-anchor": anchor }, [fmtDur(Math.pow(10, d0 + d))]));
    }
    svg.append(s("text", { x: L - 4, y: T + 4, "text-anchor": "end" }, [String(max)]));
    svg.append(s("text", { x: L - 4, y: H - B, "text-anchor": "end" }, ["0"]));
    box.append(svg);
  }

  function slowest(rows) {
    const box = $("chart-slowest");
    const top = [];
    for (const i of rows) {
      if (top.length < 10 || S.d[i] > S.d[top[top.length - 1]]) {
        top.push(i);
        top.sort((x, y) => S.d[y] - S.d[x]);
        if (top.length > 10) top.pop();
      }
    }
    if (!top.length) { box.append(h("p", { cls: "muted", text: "No tests." })); return; }
    const max = S.d[top[0]] || 1;
    const list = h("div", { id: "slowest" });
    for (const i of top) {
      const fill = h("span", { cls: "bar-fill" });
      fill.style.width = ((100 * S.d[i]) / max).toFixed(1) + "%";
      list.append(h("div", { cls: "bar-row", "data-row": String(i), title: nodeid(i), on: { click: () => openDetail(i) } }, [
        h("span", { cls: "bar-label" }, [fill, h("span", { cls: "bar-text", text: S.n[i] })]),
        h("span", { cls: "bar-value", text: fmtDur(S.d[i] / 1000) }),
      ]));
    }
    box.append(list);
  }

  function trend() {
    const box = $("chart-trend");
    const runs = DATA.trend;
    $("trend-hint").textContent = "last " + runs.length + (GROUP ? " run group" : " run") + (runs.length === 1 ? "" : "s") + " of this database";
    const isCurrent = (r) => (r.current !== undefined ? r.current : r.number === RUN.number);
    const label = (r) => (r.label !== undefined ? r.label : "#" + r.number);
    const name = (r) => (r.label !== undefined && r.runs > 1 ? "run group " + r.label + " (" + r.runs + " runs)" : "run #" + r.number);
    const W = 360, H = 170, L = 34, R = 40, B = 22, T = 8;
    const svg = s("svg", { viewBox: "0 0 " + W + " " + H, role: "img", "aria-label": "pass rate and duration trend", id: "trend" });
    const maxDur = Math.max(...runs.map((r) => r.duration || 0), 0.001);
    const n = runs.length;
    const xw = (W - L - R) / Math.max(n, 1);
    svg.append(s("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#adb5bd" }));
    const points = [];
    runs.forEach((r, k) => {
      const x = L + k * xw;
      const hgt = ((H - B - T) * (r.duration || 0)) / maxDur;
      const bar = s("rect", { x: x + xw * 0.2, y: H - B - hgt, width: Math.max(xw * 0.6, 1), height: hgt, fill: isCurrent(r) ? "#a5d8ff" : "#dee2e6" });
      bar.append(svgTitle(name(r) + ": " + (r.duration === null ? "no duration" : fmtDur(r.duration * 1000))));
      svg.append(bar);
      const c = r.counts || {};
      const good = (c.passed || 0) + (c.xfailed || 0) + (c.xpassed || 0);
      const counted = r.total - (c.skipped || 0);
      if (counted > 0) points.push([x + xw / 2, T + (H - B - T) * (1 - good / counted), r, good / counted]);
    });
    if (points.length > 1) {
      svg.append(s("polyline", { points: points.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "), fill: "none", stroke: "#2f9e44", "stroke-width": 2 }));
    }
    for (const [x, y, r, rate] of points) {
      const dot = s("circle", { cx: x, cy: y, r: isCurrent(r) ? 4.5 : 3, fill: rate === 1 ? "#2f9e44" : "#e03131", stroke: "#fff", "stroke-width": 1 });
      dot.append(svgTitle(name(r) + " (" + r.status + "): " + (100 * rate).toFixed(1) + "% passed of " + r.total + " steps"));
      svg.append(dot);
    }
    svg.append(s("text", { x: L - 4, y: T + 4, "text-anchor": "end" }, ["100%"]));
    svg.append(s("text", { x: L - 4, y: H - B, "text-anchor": "end" }, ["0%"]));
    svg.append(s("text", { x: W - R + 4, y: T + 4 }, [fmtDur(maxDur * 1000)]));
    if (n) {
      svg.append(s("text", { x: L + xw / 2, y: H - 6, "text-anchor": "middle" }, [label(runs[0])]));
      if (n > 1) svg.append(s("text", { x: L + (n - 0.5) * xw, y: H - 6, "text-anchor": "middle" }, [label(runs[n - 1])]));
    }
    box.append(svg);
    box.append(h("div", { cls: "hint", text: "line: pass rate (passed, xfailed, xpassed of the steps not skipped); bars: " + (GROUP ? "wall time of each run group" : "run duration") }));
  }

  function problems() {
    const host = $("problems");
    const failing = [];
    for (let i = 0; i < N; i++) {
      const o = outcomeOf(i);
      if ((o === "failed" || o === "error") && !nonfinal[i]) failing.push(i);
    }
    const fails = h("div", { cls: "card", id: "failures" }, [h("h2", { text: "Failures and errors (" + failing.length + ")" })]);
    if (failing.length) {
      const list = h("ul", { cls: "problem-list" });
      for (const i of failing.slice(0, 200)) {
        list.append(h("li", { "data-row": String(i), "data-shard": GROUP ? shardOf(i).label : null, on: { click: () => openDetail(i) } }, [
          pill(outcomeOf(i)), " ", GROUP ? h("span", { cls: "shard", text: shardOf(i).label }) : null,
          GROUP ? " " : null, h("span", { cls: "mono", text: nodeid(i) }),
          h("span", { cls: "reason", text: reasons.get(i) || "" }),
        ]));
      }
      fails.append(list);
      if (failing.length > 200) fails.append(h("p", { cls: "muted", text: (failing.length - 200) + " more: filter the steps by outcome." }));
    } else fails.append(h("p", { cls: "muted", text: "None." }));
    const flaky = h("div", { cls: "card", id: "flaky" }, [h("h2", { text: "Flaky tests (" + DATA.flaky.tests.length + ")" }),
      h("div", { cls: "hint", text: "as `stepflow flaky`: passed and failed on one commit, or " + DATA.flaky.minFlips + "+ pass/fail flips in the last " + DATA.flaky.window + " runs" })]);
    const rowOf = new Map();
    for (const i of DATA.flaky.rows) if (!rowOf.has(nodeid(i))) rowOf.set(nodeid(i), i);
    if (DATA.flaky.tests.length) {
      const list = h("ul", { cls: "problem-list" });
      for (const t of DATA.flaky.tests.slice(0, 200)) {
        const i = rowOf.has(t.nodeid) ? rowOf.get(t.nodeid) : -1;
        list.append(h("li", { on: { click: () => openDetail(i) } }, [
          h("span", { cls: "mono", text: t.nodeid }),
          h("span", { cls: "reason", text: flakyTitle(t) + (i < 0 ? " \u2014 not in this run" : "") }),
          t.quarantined ? h("span", { cls: "badge quarantined", text: "quarantined", title: quarantined.get(t.nodeid) || "" }) : null,
        ]));
      }
      flaky.append(list);
    } else flaky.append(h("p", { cls: "muted", text: "None." }));
    host.append(fails, flaky);
  }

  function footer() {
    const st = DATA.detailStats;
    $("footer").append(h("p", { text: "pytest-stepflow report, generated " + DATA.generatedAt + " from " + DATA.database +
      ". Embedded: " + N + " steps; output, logs and tracebacks of " + st.embedded + " steps (each text clipped at " +
      DATA.limits.clip + " characters" + (st.clipped ? ", " + st.clipped + " steps clipped" : "") +
      (st.omitted ? ", " + st.omitted + " steps left out by the size budget" : "") +
      "). Artifact files are not embedded: they are linked from the artifact store next to the database." }));
  }

  // ---- start -----------------------------------------------------------------------------
  renderHeader();
  buildFilters();
  sortView();
  renderRows();
  performance.mark("stepflow-first-rows");
  $("rows").addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", onScroll);
  $("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && !$("detail").hidden) closeDetail(); });
  timeline.init();
  const rows = finalTests();
  histogram(rows);
  slowest(rows);
  trend();
  problems();
  footer();
  // For tests and scripts: where a step's bar is, and a way to open a step.
  window.stepflowReport = Object.freeze({
    steps: N,
    openStep: openDetail,
    barCenter(i) {
      const r = timeline.barRect(i);
      if (!r) return null;
      const c = timeline.canvas.getBoundingClientRect();
      return { x: c.left + r.x + r.w / 2, y: c.top + r.y + r.h / 2 };
    },
    view: timeline.view,
    setView: timeline.setView,
  });
  document.documentElement.dataset.ready = "1";
  performance.mark("stepflow-ready");
})();

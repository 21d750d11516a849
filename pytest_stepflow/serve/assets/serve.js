// stepflow serve: the pages. Every value from the database is text: the DOM is built with
// createElement/textContent only, never innerHTML, and links are made from ids and
// encoded parameters, never from stored text.
"use strict";

(() => {
  const main = document.getElementById("main");
  const problemBox = document.getElementById("problem");
  const liveState = document.getElementById("live-state");
  const OUTCOMES = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"];
  const FAILING = new Set(["failed", "error"]);
  let source = null; // the page's EventSource, closed when the page ends

  // -- small helpers ---------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const svgNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const node = document.createElementNS(svgNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }
  function link(path, params, text, cls) {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") query.set(k, String(v));
    const qs = query.toString();
    return el("a", { href: path + (qs ? "?" + qs : ""), class: cls, text });
  }
  const testLink = (nodeid, run) => link("/test", { nodeid, run }, nodeid, "mono");
  const runLink = (number) => el("a", { href: "/run/" + Number(number), text: "#" + Number(number) });
  function seconds(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    if (value < 1) return Math.round(value * 1000) + " ms";
    if (value < 60) return value.toFixed(value < 10 ? 2 : 1) + " s";
    const m = Math.floor(value / 60), s = Math.round(value % 60);
    if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, "0")}m`;
  }
  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }
  const pill = (status) => el("span", { class: "pill " + cssWord(status), text: status });
  const cssWord = (word) => (/^[a-z_]+$/.test(String(word)) ? String(word) : "other");
  function countChips(counts) {
    const box = el("span", { class: "counts" });
    for (const outcome of [...OUTCOMES, ...Object.keys(counts || {}).filter((k) => !OUTCOMES.includes(k))]) {
      const n = (counts || {})[outcome];
      if (n) box.append(el("span", { class: "count " + cssWord(outcome), dataset: { outcome }, text: `${n} ${outcome}` }));
    }
    return box;
  }
  function progress(done, total, big) {
    const share = total ? Math.min(1, done / total) : 0;
    const bar = el("span", { class: "progress" + (big ? " big" : ""), role: "progressbar", "aria-valuenow": done, "aria-valuemax": total || 0 });
    const fill = el("span");
    fill.style.width = (share * 100).toFixed(1) + "%";
    bar.append(fill);
    return bar;
  }
  function showProblem(message) {
    problemBox.hidden = !message;
    problemBox.textContent = message || "";
  }
  async function getJSON(path, params) {
    const query = new URLSearchParams(params || {}).toString();
    const response = await fetch(path + (query ? "?" + query : ""), { credentials: "same-origin" });
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const message = (body && body.error) || `${response.status} ${response.statusText}`;
      throw new Error(message);
    }
    return body;
  }
  function failed(error) {
    main.replaceChildren(el("p", { class: "empty", id: "page-error", text: String(error.message || error) }));
  }
  function listen(params, handlers) {
    if (source) source.close();
    const query = new URLSearchParams(params || {}).toString();
    const stream = source = new EventSource("/events" + (query ? "?" + query : ""));
    stream.onopen = () => { liveState.textContent = "live"; };
    // The browser reconnects by itself, unless the server refused the stream (a restarted
    // server with another token, say): then only a reload helps, and the page says so.
    stream.onerror = () => {
      liveState.textContent = stream.readyState === EventSource.CLOSED
        ? "live updates stopped: reload the page" : "reconnecting…";
    };
    for (const [name, handler] of Object.entries(handlers)) {
      stream.addEventListener(name, (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        handler(data);
      });
    }
    stream.addEventListener("problem", (event) => showProblem(JSON.parse(event.data).message));
    return stream;
  }
  function table(headers, rows, numeric) {
    const num = new Set(numeric || []);
    return el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: num.has(i) ? "num" : null, text: h })))),
      el("tbody", {}, rows));
  }
  function cell(content, cls) { return el("td", { class: cls }, content); }
  function params() { return Object.fromEntries(new URLSearchParams(location.search)); }

  // -- charts --------------------------------------------------------------------------------
  function barChart(values, opts) {
    // values: [{value, bad, title}] drawn left (oldest) to right (newest)
    const width = 600, height = 120, pad = 14;
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": opts.label });
    const max = Math.max(opts.max || 0, ...values.map((v) => v.value || 0)) || 1;
    const step = Math.min(40, (width - pad) / Math.max(1, values.length));
    values.forEach((v, i) => {
      const h = Math.max(1, ((v.value || 0) / max) * (height - pad));
      const bar = svg("rect", { class: v.bad ? "bar bad" : "bar", x: pad + i * step + 1, y: height - h, width: Math.max(1, step - 2), height: h });
      const title = svg("title", {});
      title.textContent = v.title;
      bar.append(title);
      chart.append(bar);
    });
    chart.append(svg("line", { class: "axis", x1: pad, y1: height - 0.5, x2: width, y2: height - 0.5 }));
    const label = svg("text", { x: 0, y: 10 });
    label.textContent = opts.top;
    chart.append(label);
    return chart;
  }

  // -- the runs list -------------------------------------------------------------------------
  async function runsPage() {
    const p = params();
    const form = el("form", { class: "filters", method: "get", action: "/runs" },
      el("label", {}, "status ", el("select", { name: "status", id: "f-status" },
        ["", "running", "passed", "failed", "interrupted", "error", "no_tests"].map((s) => el("option", { value: s, text: s || "any", selected: p.status === s })))),
      el("label", {}, "branch ", el("input", { name: "branch", id: "f-branch", value: p.branch || "", size: 14 })),
      el("label", {}, "tag ", el("input", { name: "tag", id: "f-tag", value: p.tag || "", placeholder: "key or key=value", size: 16 })),
      el("button", { type: "submit", text: "filter" }));
    const trend = el("div", { class: "card", id: "trend" });
    const listBox = el("div", { class: "card", id: "runs" });
    const groupBox = el("div", { id: "groups" });
    main.replaceChildren(el("h1", { text: "Runs" }), form, trend, listBox, groupBox);
    const query = {};
    for (const key of ["status", "branch", "tag", "limit"]) if (p[key]) query[key] = p[key];
    let rows = new Map();
    let refetch = null;
    async function load() {
      const data = await getJSON("/api/runs", query);
      rows = new Map();
      const body = data.runs.map((run) => {
        const total = run.total || 0;
        const running = run.status === "running";
        const tr = el("tr", { dataset: { number: run.number, status: run.status } },
          cell(runLink(run.number)),
          cell(pill(run.status), "status"),
          cell(when(run.started_at)),
          cell(seconds(run.duration), "num"),
          cell(running ? [progress(total, null), el("span", { class: "done", text: String(total) })] : String(total), "num tests"),
          cell(countChips(run.counts), "outcomes"),
          cell(run.name || ""),
          cell(run.branch || ""),
          cell((run.commit || "").slice(0, 10), "mono"),
          cell(run.shard ? `${run.shard}` : ""));
        rows.set(run.number, tr);
        return tr;
      });
      listBox.replaceChildren(data.runs.length
        ? table(["#", "status", "started", "duration", "tests", "outcomes", "name", "branch", "commit", "shard"], body, [3, 4])
        : el("p", { class: "empty", text: "no runs match" }));
      const finished = data.runs.filter((r) => r.status !== "running").reverse();
      trend.replaceChildren(
        el("h2", { text: `Trend of the last ${finished.length} finished runs` }),
        ...(finished.length ? [
          el("div", { class: "muted", text: "pass rate" }),
          barChart(finished.map((r) => {
            const t = r.total || 0, passed = (r.counts.passed || 0) + (r.counts.xfailed || 0) + (r.counts.xpassed || 0);
            const rate = t ? passed / t : 0;
            return { value: rate, bad: r.status !== "passed", title: `#${r.number}: ${(rate * 100).toFixed(1)}% passed` };
          }), { label: "pass rate by run", top: "100%", max: 1 }),
          el("div", { class: "muted", text: "duration" }),
          barChart(finished.map((r) => ({ value: r.duration || 0, bad: false, title: `#${r.number}: ${seconds(r.duration)}` })),
            { label: "duration by run", top: seconds(Math.max(...finished.map((r) => r.duration || 0))) }),
        ] : [el("p", { class: "empty", text: "no finished runs yet" })]));
      groupBox.replaceChildren();
      if (data.groups.length) {
        groupBox.append(el("div", { class: "card" }, el("h2", { text: "Run groups" }), table(
          ["group", "status", "started", "duration", "tests", "outcomes", "runs", "branch"],
          data.groups.map((g) => el("tr", {},
            cell(link("/group", { id: g.group }, g.group, "mono")), cell(pill(g.status)), cell(when(g.started_at)),
            cell(seconds(g.duration), "num"), cell(String(g.total || 0), "num"), cell(countChips(g.counts)),
            cell(g.runs.map((n) => [runLink(n), " "])), cell(g.branch || ""))), [3, 4])));
      }
    }
    try { await load(); } catch (e) { return failed(e); }
    const asked = new Set();
    listen({}, {
      snapshot: (data) => showProblem(data.problem),
      runs: (data) => {
        let again = false;
        for (const run of data.runs) {
          const tr = rows.get(run.number);
          // A run new to the list, or one that ended: ask the list again, once for each
          // (a filtered list that leaves the run out is not asked again at each heartbeat).
          const change = `${run.number}:${run.status}`;
          if (!tr || tr.dataset.status !== run.status) {
            if (!asked.has(change)) { asked.add(change); again = true; }
            continue;
          }
          if (run.status === "running") {
            const cellBox = tr.querySelector(".tests");
            cellBox.replaceChildren(progress(run.completed_steps, run.collected),
              el("span", { class: "done", text: run.collected ? `${run.completed_steps}/${run.collected}` : String(run.completed_steps) }));
          }
        }
        if (again && !refetch) refetch = setTimeout(() => { refetch = null; load().catch((e) => showProblem(e.message)); }, 300);
      },
    });
  }

  // -- one run -------------------------------------------------------------------------------
  async function runPage(number) {
    let snap;
    try { snap = await getJSON("/api/live", { run: number }); } catch (e) { return failed(e); }
    const h = snap.header;
    document.title = `stepflow run #${number}` + (h.name ? " " + h.name : "");
    const statusBox = el("span", { id: "status" });
    const countsBox = el("span", { id: "counts" });
    const progressBox = el("div", { id: "progress" });
    const etaBox = el("span", { id: "eta", class: "muted" });
    const workersBox = el("div", { class: "card", id: "workers" });
    const failuresBox = el("div", { class: "card", id: "failures" });
    const recentBox = el("div", { class: "card", id: "recent" });
    const reportBox = el("div", { id: "report" });
    const meta = el("dl", { class: "meta" });
    for (const [key, value] of [
      ["started", when(h.started_at)], ["host", h.host], ["branch", h.branch], ["commit", h.commit],
      ["group", h.shard ? `${h.run_group} (shard ${h.shard})` : null],
      ["command", (h.command || []).join(" ")],
    ]) if (value) meta.append(el("dt", { text: key }), el("dd", { text: value }));
    main.replaceChildren(
      el("div", { class: "card" },
        el("div", { class: "header-line" }, el("h1", { text: `Run #${number}` + (h.name ? ` ${h.name}` : "") }), statusBox, countsBox, etaBox),
        progressBox, meta),
      workersBox, failuresBox, recentBox, reportBox);
    const state = { counts: snap.counts, done: snap.done, run: snap.run, failures: [], total: snap.failures_total, recent: snap.recent, eta: snap.eta, etaAt: Date.now() };
    const failureList = el("div", { id: "failure-list" });
    function drawHeader() {
      const run = state.run || { status: h.status };
      statusBox.replaceChildren(pill(run.status));
      statusBox.dataset.status = run.status;
      countsBox.replaceChildren(countChips(state.counts));
      const total = run.collected;
      progressBox.replaceChildren();
      if (run.status === "running") {
        progressBox.append(progress(state.done, total, true),
          el("span", { id: "done", text: total ? `${state.done} of ${total} tests` : `${state.done} tests so far` }),
          " · ", el("a", { href: `/run/${number}/report`, target: "_blank", rel: "noopener", id: "report-so-far", text: "the report so far" }));
      } else {
        progressBox.append(el("span", { id: "done", text: `${state.done} tests in ${seconds(h.duration || (run.completed_at && h.started_at ? (new Date(run.completed_at) - new Date(h.started_at)) / 1000 : null))}` }));
      }
    }
    function drawEta() {
      const run = state.run;
      if (!run || run.status !== "running" || state.eta === null || state.eta === undefined) { etaBox.textContent = ""; return; }
      const left = Math.max(0, state.eta - (Date.now() - state.etaAt) / 1000);
      etaBox.textContent = `about ${seconds(left)} left`;
    }
    function drawWorkers() {
      const run = state.run;
      if (!run || run.status !== "running") { workersBox.hidden = true; return; }
      workersBox.hidden = false;
      const now = Date.now() / 1000;
      const entries = Object.entries(run.current || {});
      workersBox.replaceChildren(el("h2", { text: "Running now" }), entries.length
        ? table(["worker", "test", "for"], entries.map(([worker, cur]) => el("tr", { dataset: { worker } },
            cell(worker, "mono"), cell(testLink(cur.nodeid), "nodeid"), cell(seconds(Math.max(0, now - cur.since)), "num"))), [2])
        : el("p", { class: "empty", text: "between tests" }));
    }
    function failureNode(f) {
      return el("div", { class: "failure " + cssWord(f.outcome), dataset: { step: f.id } },
        el("div", {}, pill(f.outcome), " ", testLink(f.nodeid, number), el("span", { class: "muted", text: ` ${f.worker} · ${seconds(f.duration)}${f.attempt > 1 ? " · attempt " + f.attempt : ""}` })),
        f.longrepr ? el("pre", { class: "traceback", text: f.longrepr + (f.clipped ? "\n… [clipped]" : "") }) : null);
    }
    function addFailures(list) {
      for (const f of list) {
        state.failures.push(f);
        failureList.append(failureNode(f));
      }
      drawFailureHead();
    }
    const failureHead = el("h2");
    function drawFailureHead() {
      failureHead.textContent = `Failures (${state.total})`;
      failuresBox.hidden = state.total === 0;
    }
    failuresBox.replaceChildren(failureHead, failureList);
    const recentBody = el("tbody");
    function drawRecent() {
      recentBox.hidden = !(state.run && state.run.status === "running");
      recentBody.replaceChildren(...state.recent.slice().reverse().map((s) => el("tr", {},
        cell(pill(s.final ? s.outcome : "rerun")), cell(testLink(s.nodeid, number), "nodeid"), cell(s.worker, "mono"), cell(seconds(s.duration), "num"))));
    }
    recentBox.replaceChildren(el("h2", { text: "Latest steps" }), el("table", {}, recentBody));
    function loadReport() {
      if (reportBox.firstChild) return;
      reportBox.append(el("iframe", { class: "report", id: "report-frame", src: `/run/${number}/report`, title: `report of run #${number}` }));
    }
    function ended() {
      return state.run && state.run.status !== "running";
    }
    function drawAll() {
      drawHeader(); drawEta(); drawWorkers(); drawRecent(); drawFailureHead();
      if (ended()) { loadReport(); if (source) { source.close(); source = null; liveState.textContent = ""; } }
    }
    addFailures(snap.failures);
    drawAll();
    if (ended()) return;
    const ticker = setInterval(() => { if (ended()) clearInterval(ticker); drawEta(); drawWorkers(); }, 1000);
    listen({ run: number }, {
      snapshot: (data) => {
        showProblem(data.problem);
        Object.assign(state, { counts: data.counts, done: data.done, run: data.run, total: data.failures_total, recent: data.recent, eta: data.eta, etaAt: Date.now(), failures: [] });
        failureList.replaceChildren();
        addFailures(data.failures);
        drawAll();
      },
      steps: (data) => {
        Object.assign(state, { counts: data.counts, done: data.done, total: data.failures_total });
        state.recent = state.recent.concat(data.steps).slice(-60);
        addFailures(data.failures);
        drawHeader(); drawRecent();
      },
      run: (data) => {
        Object.assign(state, { run: data.run, eta: data.eta, etaAt: Date.now() });
        drawAll();
      },
      reset: () => { location.reload(); },
      gone: () => showProblem(`run #${number} is not in the database any more`),
    });
  }

  // -- one test ------------------------------------------------------------------------------
  async function testPage() {
    const p = params();
    let data;
    try { data = await getJSON("/api/test", { nodeid: p.nodeid || "", run: p.run || "" }); } catch (e) { return failed(e); }
    document.title = `stepflow ${data.nodeid}`;
    const history = data.history.slice().reverse(); // oldest first
    const strip = el("div", { class: "strip", id: "strip", "aria-label": "outcomes, oldest first" },
      history.map((e) => el("a", { class: cssWord(e.outcome), href: `/test?${new URLSearchParams({ nodeid: data.nodeid, run: e.run })}`, title: `#${e.run}: ${e.outcome} in ${seconds(e.duration)}`, dataset: { outcome: e.outcome, run: e.run } })));
    const chart = barChart(history.map((e) => ({ value: e.duration, bad: FAILING.has(e.outcome), title: `#${e.run}: ${seconds(e.duration)}` })),
      { label: "duration by run", top: seconds(Math.max(...history.map((e) => e.duration || 0))) });
    const failures = el("div", { class: "card", id: "test-failures" }, el("h2", { text: `Last failures (${data.failures.length})` }),
      data.failures.length ? data.failures.map((f) => el("div", { class: "failure " + cssWord(f.outcome) },
        el("div", {}, pill(f.outcome), " run ", runLink(f.run), f.attempt > 1 ? ` attempt ${f.attempt}` : ""),
        el("pre", { class: "traceback", text: f.longrepr }))) : el("p", { class: "empty", text: "no failure in these runs" }));
    const attempts = el("div", { class: "card", id: "attempts" }, el("h2", {}, "In run ", runLink(data.run)),
      data.attempts.map((d) => attemptNode(d)));
    main.replaceChildren(
      el("div", { class: "card" }, el("h1", { class: "mono", text: data.nodeid }),
        el("p", { class: "muted", text: `${data.history.length} runs, newest on the right` }), strip, chart),
      failures, attempts);
  }
  function attemptNode(d) {
    const s = d.step;
    const box = el("div", { class: "attempt", dataset: { step: s.id } },
      el("h3", {}, pill(s.outcome), ` attempt ${s.attempt} on ${s.worker} in ${seconds(s.duration)}`));
    if (d.substeps && d.substeps.length) {
      box.append(el("div", { class: "muted", text: "sub-steps" }), table(["outcome", "title", "phase", "duration", "message"],
        d.substeps.map((x) => el("tr", {}, cell(pill(x.outcome)), cell(x.title), cell(x.phase), cell(seconds(x.duration), "num"), cell(x.message || ""))), [3]));
    }
    if (d.logs && d.logs.length) {
      box.append(el("div", { class: "muted", text: "log records" }), table(["time", "level", "logger", "message"],
        d.logs.map((g) => el("tr", {}, cell(new Date(g.created * 1000).toLocaleTimeString()), cell(g.level_name), cell(g.logger, "mono"), cell(el("span", { class: "mono", text: g.message })))), []));
    }
    for (const [title, text] of [["stdout", d.stdout], ["stderr", d.stderr], [FAILING.has(s.outcome) ? "traceback" : "report", d.longrepr]]) {
      if (text) box.append(el("div", { class: "muted", text: title }), el("pre", { class: title, text }));
    }
    if (d.artifacts && d.artifacts.length) {
      box.append(el("div", { class: "muted", text: "artifacts" }), el("ul", {}, d.artifacts.map((a) => {
        const href = "/artifact/" + Number(a.id);
        const image = /^image\/(png|jpeg|gif|webp|bmp|avif)$/.test(String(a.mime || ""));
        return el("li", {}, el("a", { href, class: "artifact", text: a.name }), el("span", { class: "muted", text: ` ${a.mime || "?"}, ${a.size} bytes` }),
          image ? el("img", { class: "thumb", src: href, alt: a.name }) : null);
      })));
    }
    return box;
  }

  // -- search, flaky, diff -------------------------------------------------------------------
  async function searchPage() {
    const p = params();
    const input = el("input", { type: "search", name: "q", id: "q", value: p.q || "", placeholder: "text in tracebacks, output and logs", size: 40 });
    const form = el("form", { class: "filters", method: "get", action: "/search" }, input,
      el("label", {}, "last runs ", el("input", { name: "last", value: p.last || "", size: 4, placeholder: "all" })), el("button", { type: "submit", text: "search" }));
    const results = el("div", { class: "card", id: "hits" });
    main.replaceChildren(el("h1", { text: "Search" }), form, results);
    if (!p.q) return;
    let data;
    try { data = await getJSON("/api/search", { q: p.q, last: p.last || "" }); } catch (e) { return failed(e); }
    results.replaceChildren(data.hits.length ? table(["run", "test", "outcome", "in", "match"],
      data.hits.map((h) => el("tr", {}, cell(runLink(h.execution)), cell(testLink(h.nodeid, h.execution), "nodeid"), cell(pill(h.outcome)), cell(h.field), cell(snippet(h.snippet), "snippet")))) 
      : el("p", { class: "empty", text: `nothing matches ${JSON.stringify(p.q)}` }));
  }
  function snippet(text) {
    // The database marks the match between \u0002 and \u0003.
    const box = el("span", { class: "mono" });
    String(text).split("\u0002").forEach((part, i) => {
      if (i === 0) { box.append(part); return; }
      const [hit, ...rest] = part.split("\u0003");
      box.append(el("mark", { text: hit }), rest.join(""));
    });
    return box;
  }
  async function flakyPage() {
    const p = params();
    const form = el("form", { class: "filters", method: "get", action: "/flaky" },
      el("label", {}, "last runs ", el("input", { name: "last", value: p.last || "50", size: 4 })), el("button", { type: "submit", text: "show" }));
    const results = el("div", { class: "card", id: "flaky" });
    main.replaceChildren(el("h1", { text: "Flaky tests" }), form, results);
    let data;
    try { data = await getJSON("/api/flaky", { last: p.last || "50" }); } catch (e) { return failed(e); }
    results.replaceChildren(el("p", { class: "muted", text: `over ${data.runs.length} runs; flaky means at least ${data.min_flips} flips between pass and fail` }),
      data.tests.length ? table(["flips", "fail rate", "runs", "last failure", "same commit", "quarantined", "test"],
        data.tests.map((t) => el("tr", {}, cell(String(t.flips), "num"), cell((t.failure_rate * 100).toFixed(0) + "%", "num"), cell(String(t.runs), "num"),
          cell(t.last_failure ? runLink(t.last_failure) : ""), cell(t.same_commit ? "yes" : ""), cell(t.quarantined ? "yes" : ""), cell(testLink(t.nodeid), "nodeid"))), [0, 1, 2])
        : el("p", { class: "empty", text: "no flaky tests" }));
  }
  async function diffPage() {
    const p = params();
    const form = el("form", { class: "filters", method: "get", action: "/diff" },
      el("label", {}, "from ", el("input", { name: "a", value: p.a || "latest~1", size: 14 })),
      el("label", {}, "to ", el("input", { name: "b", value: p.b || "latest", size: 14 })), el("button", { type: "submit", text: "compare" }));
    const results = el("div", { id: "diff" });
    main.replaceChildren(el("h1", { text: "Diff" }), form, results);
    let data;
    try { data = await getJSON("/api/diff", { a: p.a || "latest~1", b: p.b || "latest" }); } catch (e) { return failed(e); }
    results.append(el("p", { class: "muted", text: `${data.a_label} → ${data.b_label}` }));
    let any = false;
    for (const [key, title] of [["new_failures", "New failures"], ["fixed", "Fixed"], ["still_failing", "Still failing"], ["added", "Added"], ["removed", "Removed"], ["slower", "Slower"], ["faster", "Faster"]]) {
      const changes = data[key] || [];
      if (!changes.length) continue;
      any = true;
      results.append(el("div", { class: "card", dataset: { section: key } }, el("h2", { text: `${title} (${changes.length})` }),
        table(["test", "before", "after", "duration before", "after"], changes.map((c) => el("tr", {},
          cell(testLink(c.nodeid), "nodeid"), cell(c.before ? pill(c.before) : "–"), cell(c.after ? pill(c.after) : "–"),
          cell(seconds(c.duration_before), "num"), cell(seconds(c.duration_after), "num"))), [3, 4])));
    }
    if (!any) results.append(el("p", { class: "empty", text: "no changes" }));
  }

  // -- routing -------------------------------------------------------------------------------
  function route() {
    const path = location.pathname;
    const here = path === "/" ? "runs" : path.split("/")[1];
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("here", a.dataset.page === here);
    document.getElementById("database").textContent = document.body.dataset.database || "";
    const run = /^\/run\/(\d+)$/.exec(path);
    if (run) return runPage(Number(run[1]));
    const pages = { "/": runsPage, "/runs": runsPage, "/test": testPage, "/search": searchPage, "/flaky": flakyPage, "/diff": diffPage };
    return (pages[path] || runsPage)();
  }
  window.addEventListener("pagehide", () => { if (source) source.close(); });
  Promise.resolve(route()).finally(() => { document.documentElement.dataset.ready = "1"; });
})();

// The statepipe dashboard: polls stats.json, draws graph.svg when the
// graph's shape changes, and writes the live numbers into the drawing.
"use strict";
(function () {
  const refresh = Math.max(100, Number(document.body.dataset.refresh) || 1000);
  const SVGNS = "http://www.w3.org/2000/svg";
  let shape = "";       // the shape of the drawing shown
  let loading = "";     // the shape being fetched
  let nodes = new Map(); // name -> {g, lines: [text, text]}
  let edges = new Map(); // "from->to" -> {g, label}
  let lastOK = 0;

  const $ = (id) => document.getElementById(id);
  const int = (n) => Math.round(n).toLocaleString("en-US");
  const rate = (r) => (r >= 100 ? int(r) : r >= 10 ? r.toFixed(1) : r.toFixed(2));
  function dur(ns) {
    if (!ns) return "–";
    if (ns >= 1e9) return (ns / 1e9).toFixed(ns >= 1e10 ? 0 : 1) + "s";
    if (ns >= 1e6) return (ns / 1e6).toFixed(ns >= 1e7 ? 0 : 1) + "ms";
    if (ns >= 1e3) return (ns / 1e3).toFixed(ns >= 1e4 ? 0 : 1) + "µs";
    return ns + "ns";
  }
  function set(id, text) {
    const el = $(id);
    if (el && el.textContent !== text) el.textContent = text;
  }
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }
  function fill(id, rows, cols) {
    const body = document.querySelector("#" + id + " tbody");
    const out = document.createDocumentFragment();
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const [text, cls] of cols(r)) cell(tr, text, cls);
      out.appendChild(tr);
    }
    body.replaceChildren(out);
  }

  // The drawing: Graphviz's SVG, with titles naming nodes and edges.
  async function draw(want) {
    loading = want;
    try {
      const res = await fetch("graph.svg", { cache: "no-store" });
      if (!res.ok) throw new Error(res.status + " " + res.statusText);
      const text = await res.text();
      const doc = new DOMParser().parseFromString(text, "image/svg+xml");
      const svg = doc.documentElement;
      if (svg.nodeName !== "svg") throw new Error("not an SVG");
      const box = $("graph");
      box.replaceChildren(document.importNode(svg, true));
      index(box.querySelector("svg"));
      shape = res.headers.get("X-Statepipe-Shape") || want;
    } catch (e) {
      set("status", "graph: " + e.message);
    } finally {
      loading = "";
    }
  }

  // index finds the nodes and edges of the drawing, and makes room in each
  // node for two lines of numbers under its name.
  function index(svg) {
    nodes = new Map();
    edges = new Map();
    for (const g of svg.querySelectorAll("g.node")) {
      const name = g.querySelector("title").textContent;
      const shapeEl = g.querySelector("polygon, ellipse, path");
      const label = g.querySelector("text");
      if (!shapeEl || !label) continue;
      const b = shapeEl.getBBox();
      const x = b.x + b.width / 2;
      label.setAttribute("class", "name");
      label.setAttribute("y", String(b.y + b.height * 0.36));
      const lines = [0.62, 0.84].map((f) => {
        const t = document.createElementNS(SVGNS, "text");
        t.setAttribute("class", "stat");
        t.setAttribute("text-anchor", "middle");
        t.setAttribute("x", String(x));
        t.setAttribute("y", String(b.y + b.height * f));
        g.appendChild(t);
        return t;
      });
      nodes.set(name, { g, lines });
    }
    for (const g of svg.querySelectorAll("g.edge")) {
      // The label's two lines: the count, and the rate with the latency.
      edges.set(g.querySelector("title").textContent, { g, lines: [...g.querySelectorAll("text")] });
    }
  }

  function writeNode(name, l1, l2, cls) {
    const n = nodes.get(name);
    if (!n) return;
    if (n.lines[0].textContent !== l1) n.lines[0].textContent = l1;
    if (n.lines[1].textContent !== l2) n.lines[1].textContent = l2;
    n.g.setAttribute("class", "node " + cls);
  }

  function writeGraph(s) {
    const stages = new Map(s.stages.map((x) => [x.name, x]));
    const batchers = new Map(s.batchers.map((x) => [x.name, x]));
    for (const n of s.nodes) {
      switch (n.kind) {
        case "stage": {
          const x = stages.get(n.name) || { runs: n.runs, errors: 0 };
          writeNode(n.name, int(x.runs) + " runs · " + int(x.errors) + " err",
            "p50 " + dur(x.p50) + " · p99 " + dur(x.p99), x.errors > 0 ? "stage errors" : "stage");
          break;
        }
        case "batch": {
          const b = batchers.get(n.name);
          if (b) writeNode(n.name, int(b.total) + " flushes · fill " + b.meanFill.toFixed(1), int(b.parked) + " parked", "batch");
          break;
        }
        case "in":
          writeNode(n.name, int(s.submitted) + " submitted", rate(s.rate) + " out/s", "end");
          break;
        case "done":
          writeNode(n.name, int(s.completed), "", "end");
          break;
        case "failed":
          writeNode(n.name, int(s.failed), "", s.failed > 0 ? "end errors" : "end");
          break;
      }
    }
    for (const e of s.edges) {
      const d = edges.get(e.from + "->" + e.to);
      if (!d || d.lines.length === 0) continue;
      let more = rate(e.rate) + "/s";
      if (e.meanLatency) more += " · " + dur(e.meanLatency);
      const text = d.lines.length > 1 ? [int(e.count), more] : [int(e.count) + " · " + more];
      d.lines.forEach((el, i) => { if (el.textContent !== (text[i] || "")) el.textContent = text[i] || ""; });
      d.g.setAttribute("class", e.rate > 0 ? "edge" : "edge idle");
    }
  }

  function writeChart(s) {
    const svg = $("chart");
    const pts = s.throughput;
    const W = 800, H = 140, pad = 6;
    let top = 1;
    for (const p of pts) top = Math.max(top, p.completed, p.failed);
    const t1 = Date.parse(s.time);
    const t0 = pts.length ? Math.min(Date.parse(pts[0].time), t1 - 30e3) : t1 - 30e3;
    const x = (t) => ((Date.parse(t) - t0) / Math.max(1, t1 - t0)) * (W - 2 * pad) + pad;
    const y = (v) => H - pad - (v / top) * (H - 2 * pad);
    const line = (key) => pts.map((p) => x(p.time).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" ");
    const parts = [];
    for (const f of [0.25, 0.5, 0.75]) parts.push(`<line class="grid" x1="0" x2="${W}" y1="${y(top * f)}" y2="${y(top * f)}"/>`);
    parts.push(`<polyline class="completed" points="${line("completed")}"/>`);
    parts.push(`<polyline class="failed" points="${line("failed")}"/>`);
    svg.innerHTML = parts.join("");
    set("chart-max", "· top of the chart: " + rate(top) + " / s");
    set("chart-span", "over the last " + Math.round((t1 - t0) / 60e3 * 10) / 10 + " min");
  }

  function write(s) {
    set("submitted", int(s.submitted));
    set("completed", int(s.completed));
    set("failed", int(s.failed));
    set("rate", rate(s.rate));
    set("inFlight", int(s.inFlight));
    set("queued", int(s.queued));
    set("running", int(s.running));
    set("parked", int(s.parked));
    set("workers", int(s.workers));
    set("groups", int(s.groups.length));
    set("queueTime", "avg " + dur(s.queueTime.avg) + ", max " + dur(s.queueTime.max));
    set("runTime", "avg " + dur(s.runTime.avg) + ", max " + dur(s.runTime.max));
    fill("stages", s.stages, (x) => [[x.name], [int(x.runs)], [int(x.errors), x.errors > 0 ? "bad" : ""],
      [rate(x.rate)], [dur(x.p50)], [dur(x.p99)]]);
    fill("batchers", s.batchers, (b) => [[b.name], [int(b.total)],
      [Object.entries(b.flushes).filter(([, n]) => n > 0).map(([r, n]) => r + " " + int(n)).join(", ") || "–"],
      [b.meanFill.toFixed(1)], [int(b.items) + (b.failed ? " (" + int(b.failed) + " failed)" : "")],
      [int(b.parked)], [dur(b.flushTime)]]);
    fill("grouptable", s.groups, (g) => [["#" + g.id], [g.ordered ? "yes" : "no"], [int(g.limit)],
      [int(g.submitted)], [int(g.pending)], [int(g.buffered)]]);
    writeGraph(s);
    writeChart(s);
  }

  async function poll() {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), Math.max(5000, 3 * refresh));
    try {
      const res = await fetch("stats.json", { cache: "no-store", signal: ctl.signal });
      if (!res.ok) throw new Error(res.status + " " + res.statusText);
      const s = await res.json();
      if (s.shape !== shape && s.shape !== loading) await draw(s.shape);
      write(s);
      lastOK = Date.now();
      const st = $("status");
      st.className = "status";
      st.textContent = "live · " + new Date(s.time).toLocaleTimeString();
    } catch (e) {
      const st = $("status");
      st.className = "status stale";
      st.textContent = "not updating (" + e.message + ")" + (lastOK ? " since " + new Date(lastOK).toLocaleTimeString() : "");
    } finally {
      clearTimeout(timer);
      setTimeout(poll, refresh);
    }
  }
  poll();
})();

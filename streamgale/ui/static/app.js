// StreamGale UI: a single page over the REST API (/api/v1/...). No build step, no dependencies.
// Routes (in the URL hash): #/  ·  #/topology/<id or name>  ·  #/topology/<id or name>/component/<component>
"use strict";

const REFRESH_MS = 2000;
const WINDOWS = [["600", "10 minutes"], ["10800", "3 hours"], ["86400", "1 day"], ["all", "All time"]];
const SVG_NS = "http://www.w3.org/2000/svg";
const state = { window: "all", generation: 0, timer: null };

// -- helpers ------------------------------------------------------------------------------------

// h("td", {class: "num", testid: "emitted-split"}, "12") builds an element; text is never parsed as HTML.
function build(ns, tag, attrs, children) {
  const el = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "testid") el.setAttribute("data-testid", value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
const h = (tag, attrs, ...children) => build(null, tag, attrs, children);
const svg = (tag, attrs, ...children) => build(SVG_NS, tag, attrs, children);

// Refreshes patch the page in place rather than rebuild it, so links and rows under the
// pointer survive a refresh (a click is not lost) and open <details> stay open.
function morph(old, fresh) {
  if (old.nodeType !== fresh.nodeType || old.nodeName !== fresh.nodeName) { old.replaceWith(fresh); return; }
  if (old.nodeType !== Node.ELEMENT_NODE) {
    if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
    return;
  }
  for (const a of [...old.attributes]) {
    if (!fresh.hasAttribute(a.name) && a.name !== "open") old.removeAttribute(a.name);
  }
  for (const a of [...fresh.attributes]) {
    if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
  }
  fill(old, ...fresh.childNodes);
}

function fill(container, ...nodes) {
  const fresh = nodes.flat().filter((n) => n !== null && n !== undefined && n !== false)
    .map((n) => (n instanceof Node ? n : document.createTextNode(String(n))));
  const old = [...container.childNodes];
  fresh.forEach((node, i) => (i < old.length ? morph(old[i], node) : container.append(node)));
  old.slice(fresh.length).forEach((node) => node.remove());
}

const enc = encodeURIComponent;
const count = (n) => (n === null || n === undefined ? "-" : Number(n).toLocaleString("en-US"));
const decimal = (n, digits = 3) => (n === null || n === undefined ? "-" : Number(n).toFixed(digits));
function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  let s = Math.floor(seconds);
  const d = Math.floor(s / 86400); s %= 86400;
  const hh = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  return (d ? `${d}d ` : "") + `${hh}h ${String(m).padStart(2, "0")}m ${String(s).padStart(2, "0")}s`;
}
const clock = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
const statusPill = (status, testid) => h("span", { class: `status status-${status}`, testid }, status);
const numCell = (value, testid, text) => h("td", { class: "num", testid, "data-value": value ?? "" },
                                            text ?? count(value));

function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map(([label, num]) => h("th", { class: num ? "num" : null }, label)))),
    h("tbody", {}, rows));
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try { body = await response.json(); } catch (e) { body = { error: `${response.status} ${response.statusText}` }; }
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                     body: JSON.stringify(body || {}) });
}

function showMessage(text, isError = false) {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = isError ? "message error" : "message";
  box.hidden = !text;
}

function crumbs(...parts) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...parts.flatMap((p, i) => [i ? h("span", { class: "sep" }, "›") : null,
    p.href ? h("a", { href: p.href, testid: p.testid }, p.text) : h("span", { testid: p.testid }, p.text)])
    .filter(Boolean));
}

function windowSelect(onChange) {
  return h("label", {}, "Window ",
    h("select", { testid: "window-select", id: "window-select",
                  onchange: (e) => { state.window = e.target.value; onChange(); } },
      WINDOWS.map(([value, label]) => h("option", { value, selected: value === state.window }, label))));
}

// An in-page confirmation dialog; resolves to the fields' values on OK, null on Cancel.
function confirmDialog({ title, text, fields = [], ok = "OK" }) {
  const overlay = document.getElementById("dialog");
  const form = document.getElementById("dialog-form");
  document.getElementById("dialog-title").textContent = title;
  document.getElementById("dialog-text").textContent = text;
  document.getElementById("dialog-ok").textContent = ok;
  const inputs = fields.map((f) => h("input", { type: "number", min: f.min ?? 0, max: f.max, step: f.step ?? 1,
                                               name: f.name, placeholder: f.placeholder ?? "",
                                               testid: `field-${f.name}` }));
  document.getElementById("dialog-fields").replaceChildren(
    ...fields.map((f, i) => h("label", {}, f.label, inputs[i])));
  overlay.hidden = false;
  (inputs[0] || document.getElementById("dialog-ok")).focus();
  return new Promise((resolve) => {
    const close = (value) => {
      overlay.hidden = true;
      form.onsubmit = null;
      document.getElementById("dialog-cancel").onclick = null;
      resolve(value);
    };
    form.onsubmit = (e) => {
      e.preventDefault();
      close(Object.fromEntries(inputs.map((input) => [input.name, input.value.trim()])));
    };
    document.getElementById("dialog-cancel").onclick = () => close(null);
    overlay.onkeydown = (e) => { if (e.key === "Escape") close(null); };
  });
}

// -- the cluster page ---------------------------------------------------------------------------

function clusterPage(root) {
  crumbs({ text: "Cluster", testid: "crumb-cluster" });
  const summary = h("dl", { class: "kv", testid: "cluster-summary" });
  const nimbuses = h("div");
  const supervisors = h("div");
  const topologies = h("div");
  root.replaceChildren(h("h1", {}, "Cluster"), summary,
    h("h2", {}, "Nimbus"), nimbuses, h("h2", {}, "Supervisors"), supervisors,
    h("h2", {}, "Topologies"), topologies);

  return async () => {
    const [c, s, t] = await Promise.all([api("/api/v1/cluster/summary"), api("/api/v1/supervisor/summary"),
                                         api("/api/v1/topology/summary")]);
    const kv = (label, value, testid) => [h("dt", {}, label), h("dd", { testid }, value)];
    fill(summary, ...kv("Leader", c.leader || "none", "cluster-leader"),
      ...kv("Supervisors", c.supervisors, "cluster-supervisors"),
      ...kv("Slots used / free / total", `${c.slotsUsed} / ${c.slotsFree} / ${c.slotsTotal}`, "cluster-slots"),
      ...kv("Topologies", c.topologies, "cluster-topologies"));
    fill(nimbuses, table([["Address"], ["Role"]], c.nimbuses.map((n) =>
      h("tr", { testid: `nimbus-row-${n}` }, h("td", {}, n), h("td", {}, n === c.leader ? "leader" : "standby")))));
    fill(supervisors, s.supervisors.length ? table(
      [["Id"], ["Host"], ["Slots used", 1], ["Free", 1], ["Total", 1], ["Ports"], ["CPUs", 1], ["Memory MB", 1],
       ["Uptime", 1]],
      s.supervisors.map((v) => h("tr", { testid: `supervisor-row-${v.id}` },
        h("td", {}, v.id), h("td", {}, v.host), numCell(v.slotsUsed, `supervisor-used-${v.id}`),
        numCell(v.slotsFree), numCell(v.slotsTotal), h("td", {}, (v.ports || []).join(", ")),
        numCell(v.cpus), numCell(v.memoryMb), h("td", { class: "num" }, duration(v.uptimeSeconds)))),
      { testid: "supervisor-table" }) : h("p", { class: "muted" }, "No supervisors registered."));
    fill(topologies, t.topologies.length ? table(
      [["Name"], ["Id"], ["Status"], ["Workers", 1], ["Executors", 1], ["Tasks", 1], ["Uptime", 1]],
      t.topologies.map((v) => h("tr", { testid: `topology-row-${v.name}` },
        h("td", {}, h("a", { href: `#/topology/${enc(v.name)}`, testid: `topology-link-${v.name}` }, v.name)),
        h("td", {}, v.id), h("td", {}, statusPill(v.status, `topology-status-${v.name}`)),
        numCell(v.workers), numCell(v.executors), numCell(v.tasks),
        h("td", { class: "num" }, duration(v.uptimeSeconds)))), { testid: "topology-table" })
      : h("p", { class: "muted", testid: "no-topologies" }, "No topologies running."));
  };
}

// -- the topology page --------------------------------------------------------------------------

function graphSvg(topology, g) {
  // Columns by depth (spouts at 0, on the left); an edge to the next column is a curve between the
  // boxes, one that skips columns or goes back arcs over the top so no box hides it.
  const W = 160, H = 46, GAP_X = 120, GAP_Y = 34, PAD = 24, ARC = 22;
  const depthOf = new Map(g.nodes.map((n) => [n.id, n.depth]));
  const arcs = g.edges.filter((e) => depthOf.get(e.to) - depthOf.get(e.from) !== 1).length;
  const top = PAD + 14 + (arcs ? 16 + arcs * ARC : 0);
  const columns = new Map();
  for (const node of g.nodes) {
    if (!columns.has(node.depth)) columns.set(node.depth, []);
    columns.get(node.depth).push(node);
  }
  const pos = new Map();
  for (const [depth, nodes] of columns) {
    nodes.forEach((node, i) => pos.set(node.id, { x: PAD + depth * (W + GAP_X), y: top + i * (H + GAP_Y) }));
  }
  const maxDepth = Math.max(0, ...columns.keys());
  const maxRows = Math.max(1, ...[...columns.values()].map((c) => c.length));
  const width = PAD * 2 + (maxDepth + 1) * W + maxDepth * GAP_X;
  const height = top + PAD + maxRows * H + (maxRows - 1) * GAP_Y;
  const out = svg("svg", { class: "graph", width, height, viewBox: `0 0 ${width} ${height}`,
                           testid: "topology-graph", role: "img", "aria-label": "component graph" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
                                    markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z", style: "fill:#8a96a3;stroke:none" }))));
  const seen = new Map();
  let arc = 0;
  for (const e of g.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const pair = `${e.from}\u0000${e.to}`;
    const nth = seen.get(pair) || 0;
    seen.set(pair, nth + 1);
    let d, lx, ly;
    if (depthOf.get(e.to) - depthOf.get(e.from) === 1) {
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
      lx = mx; ly = (y1 + y2) / 2 - 6 - nth * 13;
    } else {  // skips columns, goes back, or loops: over the top
      const level = top - 28 - (arc++) * ARC;  // the curve peaks 3/4 of the way up to it
      const x1 = a.x + W / 2 + 12, x2 = b.x + W / 2 - 12;
      d = `M ${x1} ${a.y} C ${x1} ${level}, ${x2} ${level}, ${x2} ${b.y}`;
      lx = (x1 + x2) / 2; ly = (a.y + b.y) / 8 + level * 0.75 - 4;
    }
    const label = e.grouping + (e.fields && e.fields.length ? ` [${e.fields.join(", ")}]` : "") +
                  (e.stream !== "default" ? ` · ${e.stream}` : "");
    out.append(svg("g", { testid: `edge-${e.from}-${e.to}` },
      svg("path", { d, "marker-end": "url(#arrow)" }),
      svg("text", { class: "edge", x: lx, y: ly, "text-anchor": "middle" }, label)));
  }
  for (const node of g.nodes) {
    const { x, y } = pos.get(node.id);
    const href = `#/topology/${enc(topology)}/component/${enc(node.id)}`;
    out.append(svg("g", { testid: `node-${node.id}` },
      svg("rect", { x, y, width: W, height: H, rx: 7, class: node.kind === "spout" ? "spout" : "bolt" }),
      svg("a", { href }, svg("text", { class: "name", x: x + W / 2, y: y + 19, "text-anchor": "middle" }, node.id)),
      svg("text", { x: x + W / 2, y: y + 36, "text-anchor": "middle" },
          `${node.kind} · ${node.executors} exec · ${node.tasks} tasks`)));
  }
  return out;
}

async function runAction(key, action, body, after) {
  try {
    await post(`/api/v1/topology/${enc(key)}/${action}`, body);
    showMessage(`${action} ${key}: requested`);
    if (after) after();
  } catch (e) {
    showMessage(`${action} ${key} failed: ${e.message}`, true);
  }
}

function intOrNull(text) {
  return text === "" || text === undefined ? null : Number(text);
}

function topologyPage(root, key, refresh) {
  crumbs({ text: "Cluster", href: "#/" }, { text: key, testid: "crumb-topology" });
  const title = h("h1", {}, key);
  const facts = h("dl", { class: "kv", testid: "topology-facts" });
  const components = h("div");
  const graphBox = h("div");
  const workers = h("div");
  const note = h("p", { class: "muted", testid: "stats-note" });
  let current = null;
  let graphKey = null;

  const confirmThen = async (action, text, fields, toBody, after) => {
    const values = await confirmDialog({ title: `${action[0].toUpperCase()}${action.slice(1)} ${key}?`, text,
                                         fields, ok: action[0].toUpperCase() + action.slice(1) });
    if (values === null) return;
    let body;
    try { body = toBody(values); } catch (e) { showMessage(e.message, true); return; }
    await runAction(key, action, body, after || refresh);
  };
  const buttons = h("div", { class: "toolbar" },
    h("button", { testid: "btn-activate", onclick: () => confirmThen("activate",
      "Its spouts resume emitting.", [], () => ({})) }, "Activate"),
    h("button", { testid: "btn-deactivate", onclick: () => confirmThen("deactivate",
      "Its spouts stop emitting; bolts finish the tuples in flight.", [], () => ({})) }, "Deactivate"),
    h("button", { testid: "btn-rebalance", onclick: () => {
      const comps = (current ? current.components : []).filter((c) => !c.id.startsWith("__"));
      confirmThen("rebalance", "Spouts stop for the wait, then executors are redistributed. " +
        "Leave a field empty to keep its value; the wait defaults to the topology's message timeout.",
        [{ name: "workers", label: "Workers", min: 1, placeholder: current ? current.workers : "" },
         ...comps.map((c) => ({ name: `executors:${c.id}`, label: `Executors of ${c.id} (max ${c.tasks})`, min: 1,
                                 max: c.tasks, placeholder: c.executors })),
         { name: "wait", label: "Wait seconds", min: 0, step: "any", placeholder: "default" }],
        (v) => {
          const executors = {};
          for (const [k, value] of Object.entries(v)) {
            if (k.startsWith("executors:") && value !== "") executors[k.slice(10)] = Number(value);
          }
          const body = { workers: intOrNull(v.workers), executors, wait: intOrNull(v.wait) };
          if (body.workers === null && !Object.keys(executors).length) throw new Error("rebalance: nothing to change");
          return body;
        });
    } }, "Rebalance"),
    h("button", { testid: "btn-kill", class: "danger", onclick: () => confirmThen("kill",
      "Its spouts stop, and after the wait (default: the topology's message timeout) its workers " +
      "and state are removed.",
      [{ name: "wait", label: "Wait seconds", min: 0, step: "any", placeholder: "default" }],
      (v) => ({ wait: intOrNull(v.wait) })) }, "Kill"),
    windowSelect(refresh));
  root.replaceChildren(title, facts, buttons, h("h2", {}, "Components"), note, components,
                       h("h2", {}, "Topology graph"), graphBox, h("h2", {}, "Workers"), workers);

  return async () => {
    const t = await api(`/api/v1/topology/${enc(key)}?window=${state.window}`);
    current = t;
    title.textContent = t.name;
    const kv = (label, value, testid) => [h("dt", {}, label), h("dd", { testid }, value)];
    fill(facts, ...kv("Id", t.id, "topology-id"), ...kv("Status", statusPill(t.status, "status")),
      ...kv("Workers", t.workers, "topology-workers"), ...kv("Executors", t.executors),
      ...kv("Tasks", t.tasks), ...kv("Uptime", duration(t.uptimeSeconds)));
    note.textContent = t.statsAvailable ? "" : "Metrics are not available from nimbus yet; counts show 0.";
    fill(components, table(
      [["Component"], ["Kind"], ["Executors", 1], ["Tasks", 1], ["Emitted", 1], ["Transferred", 1],
       ["Executed", 1], ["Acked", 1], ["Failed", 1], ["Exec ms", 1], ["Capacity", 1], ["Complete ms", 1],
       ["Queue", 1], ["Last error"]],
      t.components.map((c) => h("tr", { testid: `component-row-${c.id}` },
        h("td", {}, h("a", { href: `#/topology/${enc(key)}/component/${enc(c.id)}`,
                             testid: `component-link-${c.id}` }, c.id)),
        h("td", {}, c.kind), numCell(c.executors), numCell(c.tasks),
        numCell(c.emitted, `emitted-${c.id}`), numCell(c.transferred, `transferred-${c.id}`),
        numCell(c.executed, `executed-${c.id}`), numCell(c.acked, `acked-${c.id}`),
        numCell(c.failed, `failed-${c.id}`), numCell(c.executeLatencyMs, null, decimal(c.executeLatencyMs)),
        numCell(c.capacity, `capacity-${c.id}`, decimal(c.capacity)),
        numCell(c.completeLatencyMs, null, decimal(c.completeLatencyMs)), numCell(c.queue),
        h("td", { class: "error", testid: `last-error-${c.id}` },
          c.lastError ? `${clock(c.lastError.time)}: ${c.lastError.message.split("\n")[0]}` : ""))),
      { testid: "component-table" }));
    const newGraphKey = JSON.stringify(t.graph);
    if (newGraphKey !== graphKey) {
      graphKey = newGraphKey;
      graphBox.replaceChildren(graphSvg(key, t.graph));
    }
    fill(workers, t.workerList.length ? table(
      [["Host:port"], ["Supervisor"], ["Components"], ["Executors", 1], ["PID", 1], ["CPU %", 1], ["RSS MB", 1],
       ["Uptime", 1]],
      t.workerList.map((w) => h("tr", { testid: `worker-row-${w.host}-${w.port}` },
        h("td", {}, `${w.host}:${w.port}`), h("td", {}, w.supervisor), h("td", {}, w.components.join(", ")),
        numCell(w.executors), numCell(w.pid, null, w.pid ?? "-"), numCell(w.cpuPercent, null, decimal(w.cpuPercent, 1)),
        numCell(w.rssMb, null, decimal(w.rssMb, 1)), h("td", { class: "num" }, duration(w.uptimeSeconds)))),
      { testid: "worker-table" }) : h("p", { class: "muted" }, "No workers assigned."));
  };
}

// -- the component page -------------------------------------------------------------------------

function componentPage(root, key, component, refresh) {
  crumbs({ text: "Cluster", href: "#/" }, { text: key, href: `#/topology/${enc(key)}` },
         { text: component, testid: "crumb-component" });
  const title = h("h1", {}, component);
  const facts = h("dl", { class: "kv", testid: "component-facts" });
  const windows = h("div"), tasks = h("div"), errors = h("div");
  root.replaceChildren(title, facts, h("div", { class: "toolbar" }, windowSelect(refresh)),
    h("h2", {}, "By window"), windows, h("h2", {}, "Tasks"), tasks, h("h2", {}, "Recent errors"), errors);

  return async () => {
    const c = await api(`/api/v1/topology/${enc(key)}/component/${enc(component)}?window=${state.window}`);
    const kv = (label, value, testid) => [h("dt", {}, label), h("dd", { testid }, value)];
    const inputs = c.inputs.map((i) => `${i.source} (${i.stream}, ${i.type}` +
                                       (i.fields ? ` [${i.fields.join(", ")}]` : "") + ")").join("; ") || "-";
    const outputs = Object.entries(c.outputs).map(([s, f]) => `${s} [${f.join(", ")}]`).join("; ") || "-";
    fill(facts, ...kv("Topology", h("a", { href: `#/topology/${enc(key)}` }, c.topology)),
      ...kv("Kind", c.kind, "component-kind"), ...kv("Executors", c.executors), ...kv("Tasks", c.taskCount),
      ...kv("Inputs", inputs), ...kv("Outputs", outputs));
    const countCols = [["Emitted", 1], ["Transferred", 1], ["Executed", 1], ["Acked", 1], ["Failed", 1],
                       ["Exec ms", 1], ["Capacity", 1], ["Complete ms", 1]];
    fill(windows, table([["Window"], ...countCols], WINDOWS.map(([w, label]) => {
      const v = c.windows[w];
      return h("tr", { testid: `window-row-${w}` }, h("td", {}, label), numCell(v.emitted, `window-emitted-${w}`),
        numCell(v.transferred), numCell(v.executed), numCell(v.acked), numCell(v.failed),
        numCell(v.executeLatencyMs, null, decimal(v.executeLatencyMs)),
        numCell(v.capacity, null, decimal(v.capacity)), numCell(v.completeLatencyMs, null, decimal(v.completeLatencyMs)));
    }), { testid: "window-table" }));
    fill(tasks, table([["Task", 1], ["Host:port"], ["Emitted", 1], ["Transferred", 1], ["Executed", 1],
                                 ["Acked", 1], ["Failed", 1], ["Exec ms", 1], ["Capacity", 1], ["Queue", 1],
                                 ["Component metrics"]],
      c.tasks.map((t) => h("tr", { testid: `task-row-${t.task}` }, numCell(t.task),
        h("td", {}, t.host ? `${t.host}:${t.port}` : "-"), numCell(t.emitted, `task-emitted-${t.task}`),
        numCell(t.transferred), numCell(t.executed, `task-executed-${t.task}`), numCell(t.acked), numCell(t.failed),
        numCell(t.executeLatencyMs, null, decimal(t.executeLatencyMs)), numCell(t.capacity, null, decimal(t.capacity)),
        numCell(t.queue),
        h("td", { testid: `task-metrics-${t.task}` },
          Object.entries(t.metrics || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "-"))), { testid: "task-table" }));
    fill(errors, c.errors.length ? table([["Time"], ["Task", 1], ["Worker"], ["Error"]],
      c.errors.map((e, i) => h("tr", { testid: `error-row-${i}` }, h("td", {}, clock(e.time)), numCell(e.task),
        h("td", {}, `${e.host}:${e.port}`),
        h("td", { class: "error" }, h("details", {}, h("summary", {}, e.message.split("\n")[0]),
                                      h("pre", { class: "trace" }, e.message))))), { testid: "error-table" })
      : h("p", { class: "muted", testid: "no-errors" }, "No errors reported."));
  };
}

// -- routing and refreshing ---------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const generation = ++state.generation;
  clearTimeout(state.timer);
  const root = document.getElementById("app");
  const refresh = () => { if (generation === state.generation) tick(); };
  let update;
  if (parts[0] === "topology" && parts.length === 2) update = topologyPage(root, parts[1], refresh);
  else if (parts[0] === "topology" && parts[2] === "component" && parts.length === 4) {
    update = componentPage(root, parts[1], parts[3], refresh);
  } else update = clusterPage(root);

  let running = false;
  async function tick() {
    if (running || generation !== state.generation) return;
    running = true;
    clearTimeout(state.timer);
    try {
      await update();
      if (generation === state.generation) {
        document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
        const box = document.getElementById("message");
        if (box.classList.contains("stale")) { box.classList.remove("stale"); showMessage(""); }
      }
    } catch (e) {
      if (generation === state.generation) {
        showMessage(`Cannot load this page: ${e.message}`, true);
        document.getElementById("message").classList.add("stale");
      }
    } finally {
      running = false;
      if (generation === state.generation) state.timer = setTimeout(tick, REFRESH_MS);
    }
  }
  tick();
}

window.addEventListener("hashchange", () => { showMessage(""); route(); });
window.addEventListener("DOMContentLoaded", route);

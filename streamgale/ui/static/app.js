// StreamGale UI: a single page over the REST API (/api/v1/...). No build step, no dependencies.
// Routes (in the URL hash): #/  ·  #/topology/<id or name>  ·  #/topology/<id or name>/component/<component>
//   ·  #/topology/<id or name>/worker/<host:port> (its log)
"use strict";

const REFRESH_MS = 2000;
const WINDOWS = [["600", "10 minutes"], ["10800", "3 hours"], ["86400", "1 day"], ["all", "All time"]];
const SVG_NS = "http://www.w3.org/2000/svg";
// window: null until the API says its default (the one `streamgale stats` shows), then what the user chose
const state = { window: null, generation: 0, timer: null };
const LOG_LINES = 200;

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

// Actions carry the token (when one is set) in a header, never in a cookie: no other site can
// make the browser send it. It lives in this tab's sessionStorage until the tab closes.
const TOKEN_KEY = "streamgale.token";
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  return api(path, { method: "POST", headers, body: JSON.stringify(body || {}) });
}

function tokenForm() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const show = () => { input.value = ""; input.placeholder = token() ? "token set (replace)" : "token for actions"; };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
    show();
    showMessage(value ? "Token set: actions from this tab send it." : "Token cleared.");
  });
  show();
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

const windowQuery = () => (state.window ? `?window=${enc(state.window)}` : "");

// The API's answer says which window it used: the default, until the user picks one.
function adoptWindow(answer) {
  if (state.window === null) state.window = answer.window;
  const select = document.getElementById("window-select");
  if (select && select.value !== state.window) select.value = state.window;
}

const logHref = (key, host, port) => `#/topology/${enc(key)}/worker/${enc(`${host}:${port}`)}`;
// host:port as a link to that worker's log (plain text when there is no port: not a worker)
function workerCell(key, host, port, testid) {
  if (!host || !port) return h("td", {}, host || "-");
  return h("td", {}, h("a", { href: logHref(key, host, port), testid, title: "the worker's log" }, `${host}:${port}`));
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
        h("td", {}, v.id), h("td", {}, statusPill(v.failing ? "FAILING" : v.status, `topology-status-${v.name}`)),
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
      svg("path", { d: "M 0 0 L 10 5 L 0 10 z" }))));
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
  const startErrors = h("div", { testid: "start-errors" });
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
  const actionButtons = {};
  const buttons = h("div", { class: "toolbar" },
    actionButtons.activate = h("button", { testid: "btn-activate", onclick: () => confirmThen("activate",
      "Its spouts resume emitting.", [], () => ({})) }, "Activate"),
    actionButtons.deactivate = h("button", { testid: "btn-deactivate", onclick: () => confirmThen("deactivate",
      "Its spouts stop emitting; bolts finish the tuples in flight.", [], () => ({})) }, "Deactivate"),
    actionButtons.rebalance = h("button", { testid: "btn-rebalance", onclick: () => {
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
    actionButtons.kill = h("button", { testid: "btn-kill", class: "danger", onclick: () => confirmThen("kill",
      "Its spouts stop, and after the wait (default: the topology's message timeout) its workers " +
      "and state are removed.",
      [{ name: "wait", label: "Wait seconds", min: 0, step: "any", placeholder: "default" }],
      (v) => ({ wait: intOrNull(v.wait) })) }, "Kill"),
    windowSelect(refresh));
  const totals = h("div");
  const configuration = h("div");
  root.replaceChildren(title, facts, buttons, h("h2", {}, "Topology stats"), totals, startErrors,
                       h("h2", {}, "Components"), note, components,
                       h("h2", {}, "Topology graph"), graphBox, h("h2", {}, "Workers"), workers,
                       h("h2", {}, "Configuration"), configuration);

  return async () => {
    const t = await api(`/api/v1/topology/${enc(key)}${windowQuery()}`);
    adoptWindow(t);
    current = t;
    // Storm UI's rule: a button is enabled only when its action applies to the status now
    for (const [action, button] of Object.entries(actionButtons)) {
      button.disabled = !t.actions[action];
      button.title = t.actions[action] ? "" : `not while the topology is ${t.status}`;
    }
    const windowLabel = Object.fromEntries(WINDOWS);
    fill(totals, table([["Window"], ["Emitted", 1], ["Transferred", 1], ["Complete ms", 1], ["Acked", 1],
                        ["Failed", 1]],
      t.totals.map((w) => h("tr", { testid: `totals-row-${w.window}`, class: w.window === t.window ? "chosen" : null },
        h("td", {}, windowLabel[w.window] || w.window), numCell(w.emitted, `totals-emitted-${w.window}`),
        numCell(w.transferred), numCell(w.completeLatencyMs, null, decimal(w.completeLatencyMs)),
        numCell(w.acked, `totals-acked-${w.window}`), numCell(w.failed))), { testid: "totals-table" }));
    title.textContent = t.name;
    const kv = (label, value, testid) => [h("dt", {}, label), h("dd", { testid }, value)];
    fill(facts, ...kv("Id", t.id, "topology-id"), ...kv("Status", statusPill(t.failing ? "FAILING" : t.status, "status")),
      ...kv("Workers", t.workers, "topology-workers"), ...kv("Executors", t.executors),
      ...kv("Tasks", t.tasks), ...kv("Uptime", duration(t.uptimeSeconds)));
    note.textContent = t.statsAvailable ? "" : "Metrics are not available from nimbus yet; counts show 0.";
    // a refused code package, a Python environment pip could not build, a worker that died
    fill(startErrors, ...(t.startErrors.length ? [h("h2", {}, "Code and worker errors"), table(
      [["Time"], ["Source"], ["Worker"], ["Error"]],
      t.startErrors.map((e, i) => h("tr", { testid: `start-error-${i}` }, h("td", {}, clock(e.time)),
        h("td", {}, e.source === "__package" ? "code package" : "worker"),
        workerCell(key, e.host, e.port, `start-error-log-${i}`),
        h("td", { class: "error" }, h("pre", { class: "trace" }, e.message)))),
      { testid: "start-error-table" })] : []));
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
        workerCell(key, w.host, w.port, `worker-log-link-${w.host}-${w.port}`), h("td", {}, w.supervisor), h("td", {}, w.components.join(", ")),
        numCell(w.executors), numCell(w.pid, null, w.pid ?? "-"), numCell(w.cpuPercent, null, decimal(w.cpuPercent, 1)),
        numCell(w.rssMb, null, decimal(w.rssMb, 1)), h("td", { class: "num" }, duration(w.uptimeSeconds)))),
      { testid: "worker-table" }) : h("p", { class: "muted" }, "No workers assigned."));
    const shown = (v) => (v === null || v === undefined ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v));
    fill(configuration, t.configuration ? table([["Key"], ["Value"], ["Set by"]],
      t.configuration.map((c) => h("tr", { testid: `config-row-${c.key}`, class: c.source === "topology" ? "own" : null },
        h("td", {}, c.key), h("td", { class: "value", testid: `config-value-${c.key}` }, shown(c.value)),
        h("td", {}, c.source))), { testid: "config-table" })
      : h("p", { class: "muted" }, "This nimbus does not serve topology configurations."));
  };
}

// -- the component page -------------------------------------------------------------------------

function componentPage(root, key, component, refresh) {
  crumbs({ text: "Cluster", href: "#/" }, { text: key, href: `#/topology/${enc(key)}` },
         { text: component, testid: "crumb-component" });
  const title = h("h1", {}, component);
  const facts = h("dl", { class: "kv", testid: "component-facts" });
  const windows = h("div"), tasks = h("div"), errors = h("div");
  const outputBox = h("div"), inputBox = h("div"), executorBox = h("div");
  root.replaceChildren(title, facts, h("div", { class: "toolbar" }, windowSelect(refresh)),
    h("h2", {}, "By window"), windows, h("h2", {}, "Output streams"), outputBox, h("h2", {}, "Inputs"), inputBox,
    h("h2", {}, "Executors"), executorBox, h("h2", {}, "Tasks"), tasks, h("h2", {}, "Recent errors"), errors);

  return async () => {
    const c = await api(`/api/v1/topology/${enc(key)}/component/${enc(component)}${windowQuery()}`);
    adoptWindow(c);
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
    fill(outputBox, c.outputStats.length ? table([["Stream"], ["Fields"], ["Emitted", 1]],
      c.outputStats.map((o) => h("tr", { testid: `output-row-${o.stream}` }, h("td", {}, o.stream),
        h("td", {}, o.fields.join(", ") || "-"), numCell(o.emitted, `output-emitted-${o.stream}`))),
      { testid: "output-table" }) : h("p", { class: "muted" }, "No output streams."));
    fill(inputBox, c.inputStats.length ? table([["Source"], ["Stream"], ["Grouping"], ["Fields"],
                                              ["Emitted by source", 1]],
      c.inputStats.map((i) => h("tr", { testid: `input-row-${i.source}-${i.stream}` },
        h("td", {}, h("a", { href: `#/topology/${enc(key)}/component/${enc(i.source)}` }, i.source)),
        h("td", {}, i.stream), h("td", {}, i.grouping), h("td", {}, i.fields.join(", ") || "-"),
        numCell(i.emitted, `input-emitted-${i.source}-${i.stream}`))), { testid: "input-table" })
      : h("p", { class: "muted" }, "No inputs: a spout."));
    fill(executorBox, table([["Executor"], ["Host:port"], ["Uptime", 1], ...countCols],
      c.executorStats.map((e) => h("tr", { testid: `executor-row-${e.id}` }, h("td", {}, e.id),
        workerCell(key, e.host, e.port, `executor-log-${e.id}`), h("td", { class: "num" }, duration(e.uptimeSeconds)),
        numCell(e.emitted, `executor-emitted-${e.id}`), numCell(e.transferred), numCell(e.executed), numCell(e.acked),
        numCell(e.failed), numCell(e.executeLatencyMs, null, decimal(e.executeLatencyMs)),
        numCell(e.capacity, null, decimal(e.capacity)), numCell(e.completeLatencyMs, null, decimal(e.completeLatencyMs)))),
      { testid: "executor-table" }));
    fill(tasks, table([["Task", 1], ["Host:port"], ["Emitted", 1], ["Transferred", 1], ["Executed", 1],
                                 ["Acked", 1], ["Failed", 1], ["Exec ms", 1], ["Capacity", 1], ["Queue", 1],
                                 ["Component metrics"]],
      c.tasks.map((t) => h("tr", { testid: `task-row-${t.task}` }, numCell(t.task),
        workerCell(key, t.host, t.port, `task-log-${t.task}`), numCell(t.emitted, `task-emitted-${t.task}`),
        numCell(t.transferred), numCell(t.executed, `task-executed-${t.task}`), numCell(t.acked), numCell(t.failed),
        numCell(t.executeLatencyMs, null, decimal(t.executeLatencyMs)), numCell(t.capacity, null, decimal(t.capacity)),
        numCell(t.queue),
        h("td", { testid: `task-metrics-${t.task}` },
          Object.entries(t.metrics || {}).map(([k, v]) => `${k} ${v}`).join(", ") || "-"))), { testid: "task-table" }));
    fill(errors, c.errors.length ? table([["Time"], ["Task", 1], ["Worker"], ["Error"]],
      c.errors.map((e, i) => h("tr", { testid: `error-row-${i}` }, h("td", {}, clock(e.time)), numCell(e.task),
        workerCell(key, e.host, e.port, `error-log-${i}`),
        h("td", { class: "error" }, h("details", {}, h("summary", {}, e.message.split("\n")[0]),
                                      h("pre", { class: "trace" }, e.message))))), { testid: "error-table" })
      : h("p", { class: "muted", testid: "no-errors" }, "No errors reported."));
  };
}

// -- a worker's log -----------------------------------------------------------------------------

function logPage(root, key, worker) {
  crumbs({ text: "Cluster", href: "#/" }, { text: key, href: `#/topology/${enc(key)}` },
         { text: `worker ${worker}`, testid: "crumb-worker" });
  const note = h("p", { class: "muted", testid: "log-note" });
  const text = h("pre", { class: "log", testid: "worker-log" });
  root.replaceChildren(h("h1", {}, `Log of worker ${worker}`), note, text);

  return async () => {
    const log = await api(`/api/v1/topology/${enc(key)}/worker/${enc(worker)}/log?lines=${LOG_LINES}`);
    note.textContent = `The last ${log.lines.length} lines (at most ${log.linesRequested}) of ${log.topologyId}'s ` +
                       `worker on ${log.worker}, read through its supervisor; \`streamgale logs ${log.topology} -f\` follows it.`;
    fill(text, log.lines.join("\n"));
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
  else if (parts[0] === "topology" && parts[2] === "worker" && parts.length === 4) update = logPage(root, parts[1], parts[3]);
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
window.addEventListener("DOMContentLoaded", () => { tokenForm(); route(); });

// The operator dashboard: reads /dashboard/stream (one stats snapshot a
// second), turns counters into per-second rates and keeps the last five
// minutes for the charts.
"use strict";

const WINDOW_S = 300;
const wall = new URLSearchParams(location.search).has("wall");
if (wall) document.documentElement.classList.add("wall");

// Column 0 is time (seconds), the rest one series each.
const history = { t: [], in: [], out: [], dropped: [], conns: [], users: [], pub: [], conf: [], cons: [] };
let previous = null;
window.heraldDashboard = { history, last: null };

const $ = (id) => document.getElementById(id);
const fmt = (n) => (n >= 100 || Number.isInteger(n) ? Math.round(n).toLocaleString() : n.toFixed(1));

// Charts share the height left after the numbers and the tables, so a
// laptop screen shows the whole page without scrolling.
const chartHeight = () => Math.round(Math.min(300, Math.max(110, innerHeight * (wall ? 0.22 : 0.2))));
const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });

function chart(el, series) {
  const styles = getComputedStyle(document.body);
  // Axis labels follow the page's type, larger on a wall display.
  const px = Math.round(0.8 * parseFloat(getComputedStyle(document.documentElement).fontSize));
  const axis = {
    stroke: styles.getPropertyValue("--fg"),
    grid: { stroke: styles.getPropertyValue("--grid") },
    font: `${px}px system-ui, sans-serif`,
  };
  const opts = {
    width: el.clientWidth || 400,
    height: chartHeight(),
    // Labels only: the numbers that matter are the big ones above.
    legend: { show: true, live: false },
    axes: [
      { ...axis, space: 70, incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300], values: (u, splits) => splits.map(clock) },
      { ...axis, size: 4 * px },
    ],
    series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2 }))],
  };
  const plot = new uPlot(opts, [[], ...series.map(() => [])], el);
  new ResizeObserver(() => plot.setSize({ width: el.clientWidth, height: chartHeight() })).observe(el);
  return plot;
}

const charts = {
  messages: chart($("chart-messages"), [["in/s", "#4ea1ff"], ["out/s", "#3fcf8e"], ["dropped/s", "#ff6b6b"]]),
  connections: chart($("chart-connections"), [["connections", "#f5b83d"], ["users", "#c38dff"]]),
  amqp: chart($("chart-amqp"), [["published/s", "#4ea1ff"], ["confirmed/s", "#3fcf8e"], ["consumed/s", "#f5b83d"]]),
};

function push(key, value) {
  history[key].push(value);
  if (history[key].length > WINDOW_S) history[key].shift();
}

function rate(now, before, dt) {
  return before === undefined || dt <= 0 ? 0 : Math.max(0, (now - before) / dt);
}

function rows(table, pairs) {
  const body = $(table).tBodies[0];
  body.replaceChildren(...pairs.map((cells) => {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.append(td);
    }
    return tr;
  }));
}

function bars(items) {
  $("backlogs").replaceChildren(...items.map(([name, backlog, bound]) => {
    const row = document.createElement("div");
    row.className = "bar";
    const share = bound > 0 ? Math.min(1, backlog / bound) : 0;
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="num"></span>`;
    row.querySelector(".name").textContent = name;
    row.querySelector(".fill").style.width = `${(share * 100).toFixed(1)}%`;
    row.querySelector(".fill").classList.toggle("hot", share > 0.8);
    row.querySelector(".num").textContent = `${fmt(backlog)} / ${fmt(bound)}`;
    return row;
  }));
}

function show(s) {
  const t = Date.now() / 1000;
  const dt = previous ? t - previous.t : 0;
  const p = previous ? previous.s : null;
  const m = s.messages;
  const inRate = rate(m.in, p?.messages.in, dt);
  const outRate = rate(m.out, p?.messages.out, dt);
  const dropRate = rate(m.dropped, p?.messages.dropped, dt);
  const a = s.amqp;
  push("t", t);
  push("in", inRate);
  push("out", outRate);
  push("dropped", dropRate);
  push("conns", s.connections.current);
  push("users", s.users_online);
  push("pub", rate(a.published, p?.amqp.published, dt));
  push("conf", rate(a.confirmed, p?.amqp.confirmed, dt));
  push("cons", rate(a.consumed, p?.amqp.consumed, dt));
  previous = { t, s };
  window.heraldDashboard.last = { snapshot: s, in: inRate, out: outRate, dropped: dropRate };

  $("node").textContent = s.node;
  $("connections").textContent = fmt(s.connections.current);
  $("users").textContent = fmt(s.users_online);
  $("in-rate").textContent = fmt(inRate);
  $("out-rate").textContent = fmt(outRate);
  $("dropped-rate").textContent = fmt(dropRate);
  $("dropped-rate").parentElement.classList.toggle("alarm", dropRate > 0);

  charts.messages.setData([history.t, history.in, history.out, history.dropped]);
  charts.connections.setData([history.t, history.conns, history.users]);
  charts.amqp.setData([history.t, history.pub, history.conf, history.cons]);

  rows("topics", (s.busiest_topics || []).map((x) => [x.topic, fmt(x.subscribers)]));
  rows("refusals", Object.entries({
    "connections, node limit": s.refused.connections_per_node,
    "connections, per user": s.refused.connections_per_user,
    "connections, per IP": s.refused.connections_per_ip,
    "handshake rate": s.refused.handshake_rate,
    "frames rate-limited": s.refused.frames_rate_limited,
    "sessions closed for abuse": s.refused.sessions_closed_for_abuse,
    "invalid UTF-8": s.refused.invalid_utf8,
    "Broker mailbox full": s.broker.refused,
    "RabbitMQ bridge full": a.refused,
  }).map(([k, v]) => [k, fmt(v ?? 0)]));
  rows("amqp", [
    ["state", a.state],
    ["blocked", a.blocked ? "yes" : "no"],
    ["reconnects", fmt(a.reconnects)],
    ["published", fmt(a.published)],
    ["confirmed", fmt(a.confirmed)],
    ["consumed", fmt(a.consumed)],
    ["control rejected", fmt(a.control_rejected)],
  ]);
  bars([
    ["Broker mailbox", s.broker.backlog, s.broker.bound],
    ["Bridge mailbox", a.backlog, a.bound],
    ["RabbitMQ publishing", a.publishing.backlog, a.publishing.bound],
  ]);
  const self = { node: s.node, connections: s.connections.current, users: s.users_online, in_per_s: inRate, out_per_s: outRate, amqp: a.state, draining: false, age_s: 0 };
  const nodes = [self, ...((s.cluster && s.cluster.nodes) || []).filter((n) => n.node !== s.node)];
  rows("nodes", nodes.map((n) => [n.node + (n.node === s.node ? " (this node)" : ""), fmt(n.connections), fmt(n.users), fmt(n.in_per_s), fmt(n.out_per_s), n.amqp, n.draining ? "draining" : "serving", `${fmt(n.age_s)} s ago`]));
}

function connect() {
  const link = $("link");
  const source = new EventSource("/dashboard/stream");
  source.onopen = () => {
    link.textContent = "live";
    link.className = "link live";
  };
  source.onmessage = (event) => {
    try {
      show(JSON.parse(event.data));
    } catch (err) {
      console.error("bad snapshot", err);
    }
  };
  source.onerror = () => {
    // EventSource retries on its own unless the server refused outright.
    link.textContent = "disconnected, retrying…";
    link.className = "link down";
    if (source.readyState === EventSource.CLOSED) {
      setTimeout(connect, 2000);
    }
  };
}

connect();

// The gossip dashboard: one page fed by server-sent events (dash/stream); no dependencies.
"use strict";
(() => {
  const LIMITS = window.GOSSIP_LIMITS || { log_lines: 200, samples: 600 };
  const STATES = ["alive", "suspect", "dead", "left"];
  const LABEL = { alive: "alive", suspect: "suspect", dead: "dead", left: "left", unknown: "gone" };
  const COLOUR = { alive: "#2e9d5b", suspect: "#d99a00", dead: "#d64545", left: "#8a8f98" };
  const VIA = {
    probe: () => "its own probe failed",
    direct: () => "told directly",
    gossip: (r) => `by gossip, relayed by ${r}`,
    sync: (r) => `in a state exchange with ${r}`,
  };
  const $ = (sel) => document.querySelector(sel);
  const members = new Map();       // id -> member (the API's JSON form)
  const samples = [];              // {at, counts, med, max}
  let localId = null;
  let selected = null;
  let flapThreshold = Infinity;

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const short = (id) => (id ? id.slice(-8) : "?");
  const pad = (n, w) => String(n).padStart(w, "0");
  function clock(t) {
    const d = new Date(t * 1000);
    return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.${pad(d.getMilliseconds(), 3)}`;
  }
  function rtt(s) {
    if (s === null || s === undefined) return "–";
    if (s < 0.01) return `${(s * 1000).toFixed(2)} ms`;
    if (s < 1) return `${(s * 1000).toFixed(1)} ms`;
    return `${s.toFixed(2)} s`;
  }
  const secs = (s) => (s >= 10 ? s.toFixed(0) : s.toFixed(1)) + " s";

  // ------------------------------------------------------------------ members table

  function order(a, b) {
    if (a.id === localId) return -1;
    if (b.id === localId) return 1;
    return a.address < b.address ? -1 : a.address > b.address ? 1 : 0;
  }

  function renderMembers() {
    const body = $("#members tbody");
    const rows = [...members.values()].sort(order);
    body.replaceChildren(...rows.map((m) => {
      const tr = document.createElement("tr");
      tr.dataset.id = m.id;
      tr.dataset.state = m.state;
      if (m.id === selected) tr.className = "selected";
      const meta = Object.entries(m.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ");
      const flap = m.flap || 0;
      tr.innerHTML =
        `<td><span class="pill state-${esc(m.state)}">${esc(LABEL[m.state] || m.state)}</span></td>` +
        `<td class="id">${esc(m.short)}${m.id === localId ? '<span class="you">this node</span>' : ""}</td>` +
        `<td>${esc(m.address)}</td><td class="num">${esc(m.incarnation)}</td>` +
        `<td class="num">${m.id === localId ? "" : rtt(m.rtt)}</td>` +
        `<td class="num${flap >= flapThreshold ? " flapping" : ""}">${flap}</td><td class="meta">${esc(meta)}</td>`;
      tr.addEventListener("click", () => select(m.id));
      return tr;
    }));
    const n = counts();
    $("#counts").replaceChildren(...STATES.filter((s) => n[s] || s === "alive").map((s) => {
      const b = document.createElement("span");
      b.className = "badge";
      b.style.background = COLOUR[s];
      b.textContent = `${n[s]} ${LABEL[s]}`;
      return b;
    }));
  }

  function upsert(node) {
    const old = members.get(node.id) || {};
    members.set(node.id, { ...old, ...node, rtt: old.rtt ?? node.rtt, flap: old.flap ?? node.flap ?? 0 });
  }

  // ------------------------------------------------------------------ event log

  function log(text, cls, at) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    li.innerHTML = `<time>${clock(at || Date.now() / 1000)}</time>${text}`;
    const list = $("#log");
    list.prepend(li);
    while (list.children.length > LIMITS.log_lines) list.lastChild.remove();
  }

  const who = (id) => `<b class="id">${esc(short(id))}</b>`;

  // ------------------------------------------------------------------ provenance

  function select(id) {
    selected = id;
    renderMembers();
    loadProvenance(id);
  }

  function loadProvenance(id) {
    fetch(`dash/explain?node=${encodeURIComponent(id)}`)
      .then((r) => r.json().then((j) => ({ ok: r.ok, j })))
      .then(({ ok, j }) => {
        if (id !== selected) return;
        if (!ok) {
          $("#prov-body").textContent = j.error || "unknown member";
          return;
        }
        renderProvenance(j);
      })
      .catch((e) => { $("#prov-body").textContent = `cannot load: ${e}`; });
  }

  function renderProvenance(x) {
    const card = $("#provenance");
    card.dataset.node = x.node;
    card.dataset.state = x.state;
    const name = (id) => {
      if (!id) return "?";
      const n = (x.names && x.names[id]) || {};
      const label = `<b class="id">${esc(n.short || short(id))}</b>`;
      return id === localId ? `this node (${label})` : label;
    };
    const flap = x.flap || {};
    let html = `<div class="prov-head"><span class="pill state-${esc(x.state)}">${esc(LABEL[x.state] || x.state)}</span>
      ${name(x.node)} <span class="muted">${esc(x.address)} · incarnation ${esc(x.incarnation)} ·
      flap score ${esc(flap.score)} in ${secs(flap.window || 0)}${flap.flapping ? " · <span class=\"flapping\">flapping</span>" : ""}${flap.damped ? " · damped" : ""}</span></div>`;
    if (x.local) {
      html += `<p class="muted">This is the node serving the page: it refutes accusations about itself.</p>`;
    } else if (!x.episodes.length) {
      html += `<p class="muted">Never suspected by this node (it keeps the last ${esc(x.history_size)} episodes).</p>`;
    }
    html += '<ol class="episodes">';
    x.episodes.slice().reverse().forEach((e, i) => {
      const n = x.episodes.length - i;
      const steps = [];
      const via = (v, r) => (VIA[v] || (() => v))(name(r));
      if (e.expected === 0 && e.timeout === 0 && e.outcome === "dead" && !e.confirmations.length) {
        steps.push(`<li><time>${clock(e.started_at)}</time>declared dead by ${name(e.declared_by)} at incarnation ${e.incarnation}, without a suspicion here first: ${via(e.via, e.relayed_by)}</li>`);
      } else {
        steps.push(`<li><time>${clock(e.started_at)}</time>suspected by ${name(e.accuser)} at incarnation ${e.incarnation}: ${via(e.via, e.relayed_by)}; timeout ${secs(e.timeout)}</li>`);
        for (const c of e.confirmations) {
          steps.push(`<li><time>${clock(c.at)}</time>confirmed by ${name(c.node)}: ${via(c.via, c.relayed_by)}; timeout ${secs(c.timeout)} → ${secs(c.new_timeout)}</li>`);
        }
        if (e.outcome === "dead") {
          const how = e.by_timeout ? "its suspicion timed out here" : `verdict of ${name(e.declared_by)}`;
          steps.push(`<li><time>${clock(e.ended_at)}</time>declared dead: ${how}, ${secs(e.ended_at - e.started_at)} after the first accusation</li>`);
        } else if (e.outcome === "refuted") {
          steps.push(`<li><time>${clock(e.ended_at)}</time>refuted by the member at incarnation ${e.refuted_incarnation}</li>`);
        } else if (e.outcome === "left") {
          steps.push(`<li><time>${clock(e.ended_at)}</time>the member left</li>`);
        } else {
          steps.push(`<li class="muted">still suspected (${e.confirmations.length} of ${e.expected} confirmations)</li>`);
        }
      }
      if (e.returned_at) steps.push(`<li><time>${clock(e.returned_at)}</time>back alive at incarnation ${e.returned_incarnation}</li>`);
      const title = { dead: "declared dead", refuted: "refuted", left: "left", open: "open" }[e.outcome] || e.outcome;
      html += `<li class="episode outcome-${esc(e.outcome)}"><div class="ep-title">Suspicion ${n}: ${title}</div><ul class="steps">${steps.join("")}</ul></li>`;
    });
    html += "</ol>";
    $("#prov-body").innerHTML = html;
    $("#prov-body").classList.remove("muted");
  }

  // ------------------------------------------------------------------ plots

  // A step of 1, 2 or 5 times a power of ten giving about four grid lines up to ``max``.
  function niceStep(max, integer) {
    const raw = max / 4;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((v) => v >= raw) || raw;
    return integer ? Math.max(1, Math.ceil(step)) : step;
  }

  function plot(canvas, times, series, fmt, integer) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 400, h = canvas.clientHeight || 180;
    canvas.width = w * dpr;
    canvas.height = h * dpr;
    const g = canvas.getContext("2d");
    g.scale(dpr, dpr);
    g.clearRect(0, 0, w, h);
    const left = 46, right = 8, top = 8, bottom = 20;
    let top_v = 0;
    for (const s of series) for (const v of s.values) if (v !== null && v > top_v) top_v = v;
    const step = niceStep(top_v > 0 ? top_v * 1.1 : 1, integer);
    const ymax = step * Math.max(1, Math.ceil((top_v > 0 ? top_v * 1.1 : 1) / step));
    const t0 = times.length ? times[0] : 0, t1 = times.length ? times[times.length - 1] : 1;
    const x = (t) => left + (w - left - right) * (t1 > t0 ? (t - t0) / (t1 - t0) : 1);
    const y = (v) => top + (h - top - bottom) * (1 - v / ymax);
    g.strokeStyle = "#e3e6eb"; g.fillStyle = "#6b7280"; g.font = "11px sans-serif"; g.lineWidth = 1;
    for (let v = 0; v <= ymax + step / 2; v += step) {
      g.beginPath(); g.moveTo(left, y(v)); g.lineTo(w - right, y(v)); g.stroke();
      g.fillText(fmt(v), 2, y(v) + 4);
    }
    if (times.length) {
      g.fillText(clock(t0).slice(0, 8), left, h - 5);
      const end = clock(t1).slice(0, 8);
      g.fillText(end, w - right - g.measureText(end).width, h - 5);
    }
    for (const s of series) {
      g.strokeStyle = s.colour; g.lineWidth = 2; g.beginPath();
      let pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        if (pen) g.lineTo(x(times[i]), y(v)); else g.moveTo(x(times[i]), y(v));
        pen = true;
      });
      g.stroke();
    }
  }

  function legend(el, series) {
    el.innerHTML = series.map((s) => `<span><i style="background:${s.colour}"></i>${esc(s.label)}</span>`).join("");
  }

  const sizeSeries = STATES.map((s) => ({ label: LABEL[s], colour: COLOUR[s], key: s }));
  const rttSeries = [{ label: "median", colour: "#3b6fd4", key: "med" }, { label: "max", colour: "#d64545", key: "max" }];
  legend($("#size-legend"), sizeSeries);
  legend($("#rtt-legend"), rttSeries);

  function drawPlots() {
    const times = samples.map((s) => s.at);
    $("#size-plot").dataset.points = samples.length;
    plot($("#size-plot"), times, sizeSeries.map((s) => ({ ...s, values: samples.map((p) => p.counts[s.key] || 0) })),
      (v) => v.toFixed(0), true);
    plot($("#rtt-plot"), times, rttSeries.map((s) => ({ ...s, values: samples.map((p) => p[s.key]) })),
      (v) => (v === 0 ? "0" : v < 0.001 ? `${(v * 1e6).toFixed(0)}µs` : v < 1 ? `${+(v * 1000).toFixed(2)}ms` : `${+v.toFixed(2)}s`));
  }

  function counts() {
    const c = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const m of members.values()) if (m.state in c) c[m.state] += 1;
    return c;
  }

  function point(at) {
    const last = samples[samples.length - 1] || { med: null, max: null };
    samples.push({ at, counts: counts(), med: last.med, max: last.max });
    while (samples.length > LIMITS.samples) samples.shift();
  }

  function onSample(s) {
    const rtts = [];
    for (const m of members.values()) {
      m.rtt = s.rtt[m.id] ?? m.rtt ?? null;
      m.flap = s.flap[m.id] || 0;
      if (m.id !== localId && m.state === "alive" && s.rtt[m.id] !== undefined) rtts.push(s.rtt[m.id]);
    }
    rtts.sort((a, b) => a - b);
    const med = rtts.length ? rtts[Math.floor((rtts.length - 1) / 2)] : null;
    point(s.at);
    samples[samples.length - 1].med = med;
    samples[samples.length - 1].max = rtts.length ? rtts[rtts.length - 1] : null;
    renderMembers();
    drawPlots();
  }

  // ------------------------------------------------------------------ the stream

  const es = new EventSource("dash/stream");
  const conn = $("#conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn on"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; };
  const on = (kind, fn) => es.addEventListener(kind, (e) => fn(JSON.parse(e.data)));

  on("snapshot", (d) => {
    localId = d.node;
    flapThreshold = d.flap_threshold || Infinity;
    $("#local").textContent = `node ${short(d.node)} at ${d.address}`;
    members.clear();
    for (const m of d.members) members.set(m.id, m);
    if (Array.isArray(d.history)) {          // the recent past, kept by the server
      samples.splice(0, samples.length, ...d.history.slice(-LIMITS.samples));
      drawPlots();
    }
    renderMembers();
    log(`connected: ${d.members.length} members known`, "", d.at);
    if (selected) loadProvenance(selected);
  });
  on("state", (d) => {
    const n = d.node;
    if (n.state === "unknown") members.delete(n.id); else upsert(n);
    renderMembers();
    point(d.at);
    drawPlots();
    const cls = n.state === "dead" ? "alert" : n.state === "suspect" ? "warn" : "";
    log(`${who(n.id)} ${esc(n.address)}: ${esc(LABEL[d.previous] || d.previous)} → ${esc(LABEL[n.state] || n.state)}`, cls, d.at);
    if (n.id === selected) loadProvenance(n.id);
  });
  on("metadata", (d) => {
    upsert(d.node);
    renderMembers();
    const meta = Object.entries(d.node.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ");
    log(`${who(d.node.id)} metadata: ${esc(meta || "(empty)")}`, "", d.at);
  });
  on("message", (d) => log(`message type ${esc(d.type)} from ${who(d.from && d.from.id)}: <code>${esc(JSON.stringify(d.data))}</code>`, "", d.at));
  on("flapping", (d) => {
    const m = members.get(d.node);
    if (m) { m.flap = d.score; renderMembers(); }
    log(`${who(d.node)} is flapping: ${d.score} state changes in ${secs(d.window)}${d.damped ? " (damped)" : ""}`, "warn", d.at);
  });
  on("partition", (d) => log(`partition suspected: ${d.members.length} members (${Math.round(d.share * 100)} % of the live ones) lost within ${secs(d.window)}: ${d.members.slice(0, 8).map(who).join(" ")}`, "alert", d.at));
  on("healed", (d) => log(`partition healed after ${secs(d.duration)}: ${d.returned.length} of ${d.members.length} members back`
    + ((d.missing || []).length ? `; not back: ${d.missing.slice(0, 8).map((m) => m.slice(-8)).join(", ")}` : ""), "", d.at));
  on("sample", onSample);
  window.addEventListener("resize", drawPlots);
})();

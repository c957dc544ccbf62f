// The confab admin console: signs in with the server API key, then polls the admin API
// (/api/v1/admin/...) and draws what it gets. No framework, no build step. Everything a
// client controls (ids, messages) is set as text, never as HTML.
"use strict";

const KEY = "confab-admin-key";
const POLL_MS = 2000;
const CONVERSATIONS_EVERY = 5; // polls
const SLOTS = 300; // points in ten minutes, as the server keeps them

const $ = (id) => document.getElementById(id);
let apiKey = sessionStorage.getItem(KEY);
let timer = null;
let polls = 0;

class Unauthorized extends Error {}

async function api(method, path) {
  const res = await fetch(path, { method, headers: { Authorization: `ApiKey ${apiKey}` } });
  if (res.status === 401) throw new Unauthorized("wrong API key");
  if (res.status === 204) return null;
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.error?.message ?? `HTTP ${res.status}`);
  return body;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  if (cls) td.className = cls;
  return td;
}

function rows(tbody, items, render, emptyText) {
  tbody.replaceChildren();
  if (items.length === 0) {
    const tr = document.createElement("tr");
    const td = cell(emptyText, "empty");
    td.colSpan = 9;
    tr.append(td);
    tbody.append(tr);
    return;
  }
  for (const item of items) {
    const tr = document.createElement("tr");
    tr.append(...render(item));
    tbody.append(tr);
  }
}

const when = (t) => (t ? new Date(t).toLocaleTimeString() : "");

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

// A line chart of `series` (arrays of numbers or nulls, one per 2 s point, the newest last) on
// a canvas whose width is ten minutes: a young server's points fill it from the right.
function chart(canvas, series, colors) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const values = series.flat().filter((v) => v != null);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = "#2a3540";
  ctx.fillStyle = "#8a99a8";
  ctx.font = "11px system-ui";
  for (const f of [0, 0.5, 1]) {
    const y = h - pad / 2 - f * (h - pad);
    ctx.beginPath();
    ctx.moveTo(pad, y);
    ctx.lineTo(w, y);
    ctx.stroke();
    ctx.fillText(String(Math.round(max * f * 10) / 10), 2, y + 4);
  }
  series.forEach((s, i) => {
    ctx.strokeStyle = ctx.fillStyle = colors[i];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    const offset = SLOTS - s.length;
    s.forEach((v, j) => {
      if (v == null) { drawing = false; return; }
      const x = pad + ((offset + j) / (SLOTS - 1)) * (w - pad), y = h - pad / 2 - (v / max) * (h - pad);
      if (drawing) ctx.lineTo(x, y); else { ctx.moveTo(x, y); ctx.fillRect(x - 2, y - 2, 4, 4); }
      drawing = true;
    });
    ctx.stroke();
  });
  // What the tests (and a curious operator) can read back.
  canvas.dataset.points = String(series[0].length);
  canvas.dataset.max = String(values.length ? Math.max(...values) : 0);
}

function showOverview(o) {
  $("meta").textContent = `v${o.version}${o.dev ? " · DEV MODE" : ""} · up ${duration(o.uptime_s)}`;
  $("total-connections").textContent = String(o.connections.total);
  $("users-online").textContent = String(o.users_online);
  const last = o.trends[o.trends.length - 1];
  $("rate").textContent = last ? last.messages_per_s.toFixed(1) : "–";
  $("latency").textContent = last && last.p50_ms != null ? `${last.p50_ms} / ${last.p99_ms} ms` : "–";
  $("store").textContent = o.store_writable ? "writable" : "REFUSING WRITES";
  $("store").className = "value " + (o.store_writable ? "good" : "bad");
  const cert = $("certificate");
  if (o.certificate) {
    const days = o.certificate.days_left;
    cert.textContent = days < 0 ? "EXPIRED" : `${Math.floor(days)} days`;
    cert.title = `expires ${o.certificate.not_after}\nsha256 ${o.certificate.sha256}`;
    cert.className = "value " + (days < 3 ? "bad" : days < 14 ? "warn" : "good");
  } else {
    cert.textContent = "no TLS";
    cert.className = "value";
  }
  rows($("kinds"), o.connections.by_kind, (k) => [cell(k.transport), cell(k.dialect), cell(k.codec), cell(k.count, "num")], "no connections");
  chart($("chart-rate"), [o.trends.map((p) => p.messages_per_s)], ["#5fd38d"]);
  chart($("chart-latency"), [o.trends.map((p) => p.p50_ms), o.trends.map((p) => p.p99_ms)], ["#4fb3ff", "#ffb347"]);
  $("cluster").hidden = !o.nodes && !o.nodes_error;
  $("nodes-error").hidden = !o.nodes_error;
  $("nodes-error").textContent = o.nodes_error ?? "";
  rows($("nodes"), o.nodes ?? [], (n) => [
    cell(n.id + (n.this_node ? " (this node)" : "")),
    cell(n.live ? "live" : "lease expired", n.live ? "good" : "bad"),
    cell(when(n.lease_until)),
    cell(n.users, "num"),
    cell(n.connections, "num"),
  ], "no nodes");
  rows($("incidents"), o.incidents, (i) => [
    cell(when(i.at)), cell(i.code, "warn"), cell(i.user_id), cell(i.connection_id), cell(i.event), cell(i.message),
  ], "nothing lately");
}

async function refreshConversations() {
  const list = await api("GET", "/api/v1/admin/conversations?limit=100");
  rows($("conversations"), list.conversations, (c) => [
    cell(c.id), cell(c.members.join(", ")), cell(c.joined, "num"), cell(c.last_seq, "num"), cell(when(c.last_activity)),
  ], "none held here");
}

async function lookUp(user) {
  const u = await api("GET", `/api/v1/admin/users/${encodeURIComponent(user)}`);
  const p = u.presence;
  $("user").hidden = false;
  $("user-presence").textContent = p.online
    ? `${p.user_id}: online (${p.status}${p.message ? `, “${p.message}”` : ""}), ${p.connections} connection(s) across nodes`
    : `${p.user_id}: offline${p.last_seen ? `, last seen ${new Date(p.last_seen).toLocaleString()}` : ""}`;
  rows($("devices"), u.devices, (d) => {
    const button = document.createElement("button");
    button.className = "danger";
    button.textContent = "Disconnect";
    button.dataset.connectionId = d.connection_id;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("DELETE", `/api/v1/admin/users/${encodeURIComponent(p.user_id)}/connections/${encodeURIComponent(d.connection_id)}`);
        button.textContent = "Disconnected";
      } catch (e) {
        button.textContent = e.message;
      }
      setTimeout(() => lookUp(p.user_id).catch(fail), 500);
    });
    const action = document.createElement("td");
    action.append(button);
    return [cell(d.connection_id), cell(d.transport), cell(d.dialect), cell(d.codec), action];
  }, "no devices on this node");
}

function fail(e) {
  if (e instanceof Unauthorized) return signOut("The API key was refused.");
  $("status").textContent = `⚠ ${e.message}`;
  $("status").className = "bad";
}

async function poll() {
  try {
    showOverview(await api("GET", "/api/v1/admin/overview"));
    if (polls++ % CONVERSATIONS_EVERY === 0) await refreshConversations();
    $("status").textContent = "● live";
    $("status").className = "good";
  } catch (e) {
    fail(e);
  }
}

function signOut(message) {
  clearInterval(timer);
  sessionStorage.removeItem(KEY);
  apiKey = null;
  $("console").hidden = true;
  $("signin").hidden = false;
  $("signin-error").hidden = !message;
  $("signin-error").textContent = message ?? "";
}

async function signIn(key) {
  apiKey = key;
  try {
    showOverview(await api("GET", "/api/v1/admin/overview"));
  } catch (e) {
    return signOut(e instanceof Unauthorized ? "Wrong API key." : `Cannot reach the server: ${e.message}`);
  }
  sessionStorage.setItem(KEY, key);
  $("signin").hidden = true;
  $("console").hidden = false;
  polls = 0;
  await poll();
  timer = setInterval(poll, POLL_MS);
}

$("signin-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("api-key").value.trim());
});
$("signout").addEventListener("click", () => signOut());
$("user-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  lookUp($("user-id").value.trim()).catch(fail);
});
if (apiKey) signIn(apiKey);

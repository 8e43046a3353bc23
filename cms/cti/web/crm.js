// The CRM page of the CMS: a small client of the CTI API (/api/v1) and its WebSocket events.
"use strict";

const API = "/api/v1";
const MAX_EVENTS = 100;
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem("crm.token") || "";
let me = null;            // the session: {user, role}
let after = null;         // the last event seq seen
let socket = null;
let reconnect = null;
const pending = new Set(); // snapshots to reload after a burst of events

async function request(method, path, body) {
  const headers = { "Authorization": "Bearer " + token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(API + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) {
    const error = new Error((data && data.error && data.error.message) || response.statusText);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showError(error) {
  $("error").textContent = error ? String(error.message || error) : "";
  $("error").hidden = !error;
  if (error && error.status === 401) logout();
}

async function act(action) {
  try {
    showError(null);
    await action();
  } catch (error) {
    showError(error);
  }
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  row.appendChild(td);
  return td;
}

function fill(tableId, items, columns) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...items.map((item) => {
    const row = document.createElement("tr");
    columns(item).forEach((value) => cell(row, value));
    return row;
  }));
}

// -- log in and out

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    const response = await fetch(API + "/sessions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }),
    });
    const data = await response.json();
    if (!response.ok) throw new Error(data.error.message);
    token = data.token;
    sessionStorage.setItem("crm.token", token);
    await start();
  });
});

$("logout").addEventListener("click", () => act(async () => {
  await request("DELETE", "/sessions").catch(() => null);
  logout();
}));

function logout() {
  token = "";
  me = null;
  sessionStorage.removeItem("crm.token");
  if (socket) socket.close();
  socket = null;
  clearTimeout(reconnect);
  $("main").hidden = true;
  $("login").hidden = false;
  $("logout").hidden = true;
  $("whoami").textContent = "";
}

async function start() {
  me = await request("GET", "/sessions");
  $("whoami").textContent = `${me.user} (${me.role})`;
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("broadcast").hidden = me.role === "agent";
  $("agent-panel").hidden = me.role === "integration";
  const snapshot = await loadAgents();
  after = snapshot.seq;
  await Promise.all([loadQueues(), loadCalls(), loadInteractions()]);
  connect();
}

// -- snapshots

async function loadAgents() {
  const data = await request("GET", "/agents");
  fill("agents", data.agents, (a) => [a.user, a.state, a.reason, a.device]);
  $("agents").querySelectorAll("tbody tr").forEach((row, i) => {
    row.dataset.user = data.agents[i].user;
  });
  const mine = data.agents.find((a) => a.user === me.user);
  if (mine) {
    $("agent-state").textContent = mine.state;
    $("agent-reason").textContent = mine.reason ? `(${mine.reason})` : "";
  }
  return data;
}

async function loadQueues() {
  const data = await request("GET", "/queues");
  fill("queues", data.queues, (q) => [q.name, q.waiting, q.longest_wait, q.agents.ready,
    q.agents.on_call, q.agents.not_ready]);
}

async function loadInteractions() {
  const data = await request("GET", "/interactions?limit=20");
  fill("interactions", data.interactions, (r) => [r.created, r.caller_e164 || r.caller,
    r.business_partner, r.agent, r.queue, r.outcome, r.wrap_up_reason]);
}

async function loadCalls() {
  let data;
  try {
    data = await request("GET", "/calls");
  } catch (error) {
    if (error.status === 503) data = { calls: [] }; else throw error;
  }
  $("no-calls").hidden = data.calls.length > 0;
  $("calls").replaceChildren(...data.calls.map(callItem));
}

function callItem(call) {
  const item = document.createElement("li");
  item.dataset.id = call.id;
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = `${call.caller} → ${call.target} `;
  const state = document.createElement("strong");
  state.className = "state";
  state.textContent = call.state;
  item.append(title, state, " ");
  const command = (label, action, body) => {
    const button = document.createElement("button");
    button.textContent = label;
    button.addEventListener("click", () => act(async () => {
      await request("POST", `/calls/${encodeURIComponent(call.id)}/${action}`, body && body());
      await loadCalls();
    }));
    item.appendChild(button);
    return button;
  };
  command("Answer", "answer").disabled = call.state !== "ringing";
  command("Hang up", "hangup");
  command("Hold", "hold").disabled = call.state !== "connected";
  command("Retrieve", "retrieve").disabled = call.state !== "held";
  const target = document.createElement("input");
  target.className = "transfer-to";
  target.placeholder = "transfer to";
  target.size = 12;
  item.appendChild(target);
  command("Transfer", "transfer", () => ({ to: target.value, mode: "blind" }));
  const data = document.createElement("pre");
  data.className = "attached";
  data.textContent = JSON.stringify(call.attached_data);
  const key = document.createElement("input");
  key.placeholder = "key";
  key.size = 10;
  const value = document.createElement("input");
  value.placeholder = "value";
  value.size = 14;
  const save = document.createElement("button");
  save.textContent = "Attach";
  save.addEventListener("click", () => act(async () => {
    await request("PATCH", `/calls/${encodeURIComponent(call.id)}/attached_data`,
      { [key.value]: value.value === "" ? null : value.value });
    await loadCalls();
  }));
  item.append(data, key, value, save);
  return item;
}

// -- commands

function setState(state) {
  return () => act(async () => {
    await request("PUT", `/agents/${encodeURIComponent(me.user)}/state`,
      { state, reason: $("reason").value });
    await loadAgents();
  });
}

$("logon").addEventListener("click", () => act(async () => {
  await request("POST", `/agents/${encodeURIComponent(me.user)}/logon`);
  await loadAgents();
}));
$("logoff").addEventListener("click", () => act(async () => {
  await request("POST", `/agents/${encodeURIComponent(me.user)}/logoff`);
  await loadAgents();
}));
$("ready").addEventListener("click", setState("ready"));
$("not-ready").addEventListener("click", setState("not_ready"));
$("wrap-up").addEventListener("click", setState("wrap_up"));

$("dial").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    await request("POST", "/calls", { to: $("dial-to").value });
    await loadCalls();
  });
});

$("broadcast").addEventListener("submit", (event) => {
  event.preventDefault();
  act(async () => {
    const body = { text: $("broadcast-text").value };
    if ($("broadcast-to").value) body.to = $("broadcast-to").value;
    await request("POST", "/broadcasts", body);
    $("broadcast-text").value = "";
  });
});

// -- live events

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ token });
  if (after !== null) query.set("after", after);
  socket = new WebSocket(`${scheme}//${location.host}${API}/events/ws?${query}`);
  socket.onopen = () => {
    $("connection").textContent = "connected";
    $("connection").className = "up";
  };
  socket.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "heartbeat") return;
    if (event.type === "resync") {
      after = null;  // our position is gone: rebuild from the snapshots
      start().catch(showError);
      return;
    }
    after = event.seq;
    onEvent(event);
  };
  socket.onclose = () => {
    $("connection").textContent = "disconnected";
    $("connection").className = "";
    if (token && socket) reconnect = setTimeout(connect, 1000);
  };
}

function onEvent(event) {
  const line = document.createElement("li");
  line.className = "event";
  line.dataset.type = event.type;
  const { seq, time, type, ...rest } = event;
  line.textContent = `${seq} ${time.slice(11, 23)} ${type} ${JSON.stringify(rest)}`;
  $("events").prepend(line);
  while ($("events").children.length > MAX_EVENTS) $("events").lastChild.remove();
  if (type === "broadcast" || type === "alert") {
    const item = document.createElement("li");
    item.className = type;
    item.textContent = `${type === "alert" ? "Alert" : "Broadcast"} from ${event.from}: ${event.text}`;
    $("messages").prepend(item);
  }
  if (type.startsWith("agent.")) pending.add(loadAgents);
  if (type.startsWith("agent.") || type.startsWith("queue.")) pending.add(loadQueues);
  if (type.startsWith("call.")) pending.add(loadCalls);
  if (type.startsWith("interaction.") || type === "call.ended") pending.add(loadInteractions);
  if (pending.size) setTimeout(flush, 100);
}

function flush() {
  const loads = [...pending];
  pending.clear();
  loads.forEach((load) => load().catch(showError));
}

if (token) start().catch(() => logout());

// The agent's soft phone page: registration, dial pad, calls, audio controls, history.
import { request, subscribe } from "./api.js";

const $ = (id) => document.getElementById(id);
const state = { accounts: new Map(), calls: new Map(), audio: null, history: [],
                presence: new Map() };

function say(text) {
  $("message").textContent = text || "";
}

async function act(promise) {
  try {
    say("");
    return await promise;
  } catch (error) {
    say(error.message);
    return null;
  }
}

// -- rendering

function renderAccounts() {
  const list = $("accounts");
  list.replaceChildren();
  const picker = $("account");
  const chosen = picker.value;
  picker.replaceChildren();
  for (const account of state.accounts.values()) {
    const item = document.createElement("li");
    item.className = "badge";
    item.dataset.state = account.state;
    item.dataset.account = account.account;
    item.title = account.reason || account.uri;
    item.textContent = `${account.account}: ${account.state}` +
      (account.retry_in ? ` (retry in ${account.retry_in} s)` : "");
    list.append(item);
    picker.append(new Option(`${account.account} (${account.uri})`, account.account));
  }
  if (chosen) picker.value = chosen;
  picker.hidden = state.accounts.size < 2;
}

function button(label, className, onClick, disabled = false) {
  const element = document.createElement("button");
  element.textContent = label;
  if (className) element.className = className;
  element.disabled = disabled;
  element.addEventListener("click", onClick);
  return element;
}

function callAction(call, action, body) {
  return act(request("POST", `/calls/${call.id}/${action}`, body));
}

function describe(call) {
  if (call.state === "established" && call.conference.some((id) => state.calls.has(id))) {
    return "in conference";
  }
  if (call.state === "established" && call.held) return "on hold";
  if (call.state === "established" && call.remote_held) return "held by the other party";
  if (call.state === "incoming") return "ringing here";
  return call.state;
}

function renderCalls() {
  const list = $("calls");
  list.replaceChildren();
  const calls = [...state.calls.values()];
  $("no-calls").hidden = calls.length > 0;
  for (const call of calls) {
    const item = document.createElement("li");
    item.dataset.callId = call.id;
    item.dataset.state = call.state;
    const who = document.createElement("span");
    who.className = "who";
    who.append(document.createTextNode(`${call.direction === "incoming" ? "From" : "To"} `));
    const remote = document.createElement("strong");
    remote.textContent = call.remote;
    who.append(remote, " ");
    const status = document.createElement("span");
    status.className = "state";
    status.textContent = describe(call);
    who.append(status);
    item.append(who);
    const established = call.state === "established";
    if (call.state === "incoming") {
      item.append(button("Accept", "accept flash", () => callAction(call, "answer")));
      item.append(button("Reject", "reject", () => callAction(call, "reject")));
    } else {
      item.append(button("Hang up", "hangup", () => callAction(call, "hangup")));
    }
    item.append(button(call.held ? "Retrieve" : "Hold", "",
      () => callAction(call, call.held ? "retrieve" : "hold"), !established));
    item.append(button("Transfer", "", () => {
      const to = prompt("Transfer to (number, extension, user or queue):");
      if (to) callAction(call, "transfer", { to });
    }, !established));
    // With a second established call: join both (conference) or connect them (attended transfer)
    const other = calls.find((c) => c.id !== call.id && c.state === "established");
    if (established && other && !call.conference.includes(other.id)) {
      item.append(button("Conference", "", () => callAction(call, "conference", { with: other.id })));
      item.append(button("Connect to other", "", () =>
        callAction(call, "transfer", { consult_id: other.id })));
    }
    list.append(item);
  }
  const ringing = calls.find((call) => call.state === "incoming");
  $("incoming").hidden = !ringing;
  if (ringing) $("incoming-from").textContent = ringing.remote;
}

function activeCall() {
  return [...state.calls.values()].find((c) => c.state === "established" && !c.held);
}

function renderAudio() {
  const audio = state.audio;
  if (!audio) return;
  const speaker = Math.round(audio.speaker_volume * 100);
  const mic = Math.round(audio.mic_volume * 100);
  if (document.activeElement !== $("speaker-volume")) $("speaker-volume").value = speaker;
  if (document.activeElement !== $("mic-volume")) $("mic-volume").value = mic;
  $("speaker-volume-value").textContent = `${speaker}%`;
  $("mic-volume-value").textContent = `${mic}%`;
  $("mute").setAttribute("aria-pressed", String(audio.mute));
  $("mute").textContent = audio.mute ? "Unmute" : "Mute";
  for (const [id, key, wanted] of [["output-device", "outputs", audio.output_device],
                                   ["input-device", "inputs", audio.input_device]]) {
    const picker = $(id);
    picker.replaceChildren();
    for (const device of audio.devices.filter((d) => d[key] > 0)) {
      picker.append(new Option(device.name, device.name, false, device.name === wanted));
    }
    picker.disabled = audio.devices.length === 0;
  }
  $("audio-note").textContent = audio.devices.length ? "" : `Audio: ${audio.backend} (no devices)`;
}

function meter(id, dbfs) {
  // -60 dBFS .. 0 dBFS across the bar
  const percent = Math.max(0, Math.min(100, (dbfs + 60) * 100 / 60));
  const element = $(id);
  if (element.classList.contains("peak")) element.style.left = `${percent}%`;
  else element.style.width = `${percent}%`;
}

function renderLevels(levels) {
  meter("speaker-rms", levels.speaker.rms_dbfs);
  meter("speaker-peak", levels.speaker.peak_dbfs);
  meter("mic-rms", levels.microphone.rms_dbfs);
  meter("mic-peak", levels.microphone.peak_dbfs);
}

function renderHistory() {
  const list = $("history");
  list.replaceChildren();
  for (const call of state.history.slice(0, 20)) {
    const item = document.createElement("li");
    const when = call.started ? new Date(call.started).toLocaleTimeString() : "";
    const how = call.answered ? `${Math.round(call.duration)} s` : `not answered (${call.code})`;
    item.textContent = `${when} ${call.direction === "incoming" ? "←" : "→"} ${call.remote} · ${how}`;
    item.addEventListener("click", () => { $("number").value = call.remote; });
    list.append(item);
  }
}

// Colleagues' presence on the CMS (only when the profile has a [cms_api] table).
function renderColleagues() {
  const list = $("colleagues");
  list.replaceChildren();
  for (const [user, presence] of [...state.presence].sort(([a], [b]) => a.localeCompare(b))) {
    const item = document.createElement("li");
    item.dataset.user = user;
    item.dataset.presence = presence;
    const name = document.createElement("span");
    name.textContent = user;
    const badge = document.createElement("span");
    badge.className = "presence";
    badge.textContent = presence.replace("_", " ");
    item.append(name, " ", badge);
    item.addEventListener("click", () => { $("number").value = user; });
    list.append(item);
  }
  $("colleagues-section").hidden = state.presence.size === 0;
}

async function loadPresence() {
  const data = await act(request("GET", "/presence"));
  if (data) { state.presence = new Map(data.map((p) => [p.user, p.presence])); renderColleagues(); }
}

// -- events

async function loadHistory() {
  const data = await act(request("GET", "/history?limit=20"));
  if (data) { state.history = data.calls; renderHistory(); }
}

function onEvent(event) {
  if (event.type === "hello") {
    state.accounts = new Map(event.accounts.map((a) => [a.account, a]));
    state.calls = new Map(event.calls.map((c) => [c.id, c]));
    state.audio = event.audio;
    renderAccounts(); renderCalls(); renderAudio(); loadHistory(); loadPresence();
  } else if (event.type === "presence.changed") {
    state.presence.set(event.user, event.presence);
    renderColleagues();
  } else if (event.type.startsWith("registration.")) {
    state.accounts.set(event.registration.account, event.registration);
    renderAccounts();
  } else if (event.type === "call.ended") {
    state.calls.delete(event.call.id);
    renderCalls(); loadHistory();
  } else if (event.type.startsWith("call.") && event.call) {
    state.calls.set(event.call.id, event.call);
    renderCalls();
  } else if (event.type === "audio.levels") {
    renderLevels(event);
  } else if (event.type === "audio.device_changed") {
    if (event.reason !== "selected") say(`Audio device changed: ${event.reason}`);
    act(request("GET", "/audio")).then((audio) => { if (audio) { state.audio = audio; renderAudio(); } });
  } else if (event.type === "error") {
    say(`${event.where}: ${event.message}`);
  }
}

// -- controls

function press(key) {
  const call = activeCall();
  if (call) callAction(call, "dtmf", { digits: key });
  else $("number").value += key;
}

function setUp() {
  $("dial-form").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const to = $("number").value.trim();
    if (!to) return;
    const body = { to };
    if ($("account").value && state.accounts.size > 1) body.account = $("account").value;
    if (await act(request("POST", "/calls", body))) $("number").value = "";
  });
  for (const key of document.querySelectorAll("#keypad button")) {
    key.addEventListener("click", () => press(key.dataset.key));
  }
  document.addEventListener("keydown", (key) => {
    if (key.target instanceof HTMLInputElement || key.target instanceof HTMLSelectElement) return;
    if (/^[0-9*#]$/.test(key.key)) press(key.key);
    else if (key.key === "Enter") $("dial-form").requestSubmit();
    else if (key.key === "Backspace") $("number").value = $("number").value.slice(0, -1);
  });
  $("accept").addEventListener("click", () => {
    const call = [...state.calls.values()].find((c) => c.state === "incoming");
    if (call) callAction(call, "answer");
  });
  $("reject").addEventListener("click", () => {
    const call = [...state.calls.values()].find((c) => c.state === "incoming");
    if (call) callAction(call, "reject");
  });
  const updateAudio = async (changes) => {
    const audio = await act(request("PUT", "/audio", changes));
    if (audio) { state.audio = audio; renderAudio(); }
  };
  $("speaker-volume").addEventListener("input", (e) => updateAudio({ speaker_volume: e.target.value / 100 }));
  $("mic-volume").addEventListener("input", (e) => updateAudio({ mic_volume: e.target.value / 100 }));
  $("mute").addEventListener("click", () => updateAudio({ mute: !state.audio?.mute }));
  $("output-device").addEventListener("change", (e) => updateAudio({ output_device: e.target.value }));
  $("input-device").addEventListener("change", (e) => updateAudio({ input_device: e.target.value }));
  subscribe(onEvent, (connection) => {
    $("connection").dataset.state = connection;
    $("connection").textContent = connection;
  });
}

setUp();

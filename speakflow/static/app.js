// SpeakFlow browser test page: capture -> PCM16 16 kHz (AudioWorklet) -> protocol.md over
// one WebSocket -> partials and finals per source. Plain ES module, no build step.
//
// Browsers cannot set headers on a WebSocket, so the page names its user with the
// query parameter ?user_id= (AUTH_MODE=header) and sends a token as the subprotocol
// "bearer.<jwt>" (AUTH_MODE=jwt). Microphone and AudioWorklet need a secure context:
// https://, or http://localhost / http://127.0.0.1.
//
// Resume: the page keeps every chunk it sent until an `ack` (cluster servers) covers it, at
// most KEEP_CHUNKS per source. When the socket closes unexpectedly it reconnects, resumes
// the same session (start_session again, with `finals_through`: per source the end_time of
// the last final shown), and sends the kept chunks again; the server drops those it has and
// sends exactly the finals the page has not shown (docs/scaling.md, "Finals on resume").
//
// Past sessions come from the server's transcript record (GET /v1/sessions, same identity:
// X-User-Id header or Authorization: Bearer, which fetch() can set). The session being shown
// is in the URL (#session=<id>), so a reload shows it again from the record.

const TARGET_RATE = 16000;
const CHUNK_SAMPLES = 8000; // 500 ms, as the desktop client sends
const SOURCES = ["microphone", "system"];
const STOP_WAIT_MS = 60000;
const KEEP_CHUNKS = 240; // 2 minutes of 500 ms chunks per source, kept until acknowledged
const RECONNECT_DELAYS_MS = [200, 500, 1000, 2000, 4000, 8000, 15000, 30000]; // then give up
const FORMATS = { txt: "text/plain", md: "text/markdown", srt: "application/x-subrip", vtt: "text/vtt", json: "application/json" };

const CLOSE_HINTS = {
  1001: "the server is going away (restart or idle timeout)",
  1006: "the connection was lost; is the server running and reachable?",
  1008: "the server refused the connection",
  1009: "a message was too large for the server",
  1011: "the server hit an internal error",
};

const $ = (id) => document.getElementById(id);
let current = null; // the running session, see start()

// ---------------------------------------------------------------- display

function setStatus(text, state = "busy") {
  const el = $("status");
  el.textContent = text;
  el.dataset.state = state;
}

function showError(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("errors").append(li);
  setStatus("Error: see below.", "error");
}

function panel(source) {
  return $(`panel-${source}`);
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function langLabel(language) {
  // the language the server transcribed in: the one asked for, or the one it detected
  const span = document.createElement("span");
  span.className = "lang";
  span.title = "Transcription language";
  span.textContent = language;
  return span;
}

function showTranscript(msg) {
  const p = panel(msg.source);
  if (!p) return;
  if (msg.language) p.querySelector(".panel-lang").textContent = `· ${msg.language}`;
  if (msg.is_final) {
    if (msg.text.trim()) {
      const li = document.createElement("li");
      li.dataset.end = String(msg.end_time);
      const time = document.createElement("time");
      time.textContent = clock(msg.start_time);
      li.append(time);
      if (msg.language) li.append(langLabel(msg.language));
      li.append(document.createTextNode(msg.text));
      p.querySelector(".finals").append(li);
    }
    p.querySelector(".partial").textContent = "";
  } else {
    p.querySelector(".partial").textContent = msg.text;
  }
}

function resetPanels(sources) {
  $("errors").replaceChildren();
  for (const source of SOURCES) {
    const p = panel(source);
    p.querySelector(".finals").replaceChildren();
    p.querySelector(".partial").textContent = "";
    p.querySelector(".panel-lang").textContent = "";
    p.querySelector(".level").value = 0;
    p.dataset.chunks = "0";
    p.dataset.active = String(sources.includes(source));
  }
}

function setRunning(running) {
  $("start").disabled = running;
  $("stop").disabled = !running;
  for (const el of $("controls").querySelectorAll("input")) {
    el.disabled = running || el.dataset.unsupported === "true";
  }
}

// ---------------------------------------------------------------- helpers

function randomId() {
  // crypto.randomUUID() exists only in secure contexts; getRandomValues everywhere
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function tokenSubject(token) {
  // the page needs the token's sub for start_session.user_id; the server verifies the token
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.sub === "string" && claims.sub ? claims.sub : null;
  } catch {
    return null;
  }
}

function streamUrl(userId) {
  const url = new URL("v1/stt/stream", location.href); // relative: works under a proxy prefix
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  if (userId) url.searchParams.set("user_id", userId);
  return url.href;
}

function shown(text) {
  // an error already on screen: the code that catches it only cleans up
  const err = new Error(text);
  err.shown = true;
  return err;
}

function describeMediaError(err, what) {
  switch (err && err.name) {
    case "NotAllowedError":
      return `Permission to use the ${what} was denied. Allow it in the address bar and try again.`;
    case "NotFoundError":
      return `No ${what} was found.`;
    case "NotReadableError":
      return `The ${what} is in use by another program or could not be opened.`;
    default:
      return `Could not open the ${what}: ${err && err.message ? err.message : err}`;
  }
}

// ---------------------------------------------------------------- capture

async function openMicrophone() {
  try {
    return await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (err) {
    throw new Error(describeMediaError(err, "microphone"));
  }
}

async function openDisplayAudio() {
  if (!navigator.mediaDevices.getDisplayMedia) {
    throw new Error("This browser cannot share tab or system audio (no getDisplayMedia).");
  }
  let stream;
  try {
    // Chrome needs video to offer audio; tab audio everywhere, system audio on Windows/ChromeOS
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true, systemAudio: "include" });
  } catch (err) {
    throw new Error(describeMediaError(err, "tab or screen"));
  }
  if (stream.getAudioTracks().length === 0) {
    for (const track of stream.getTracks()) track.stop();
    throw new Error(
      "The shared tab or screen carries no audio: share a tab and tick \"Share tab audio\" " +
        "(system audio is offered on Windows and ChromeOS only).",
    );
  }
  return stream;
}

// ---------------------------------------------------------------- protocol

function connect(url, token) {
  return new Promise((resolve, reject) => {
    const protocols = ["speakflow"];
    if (token) protocols.push(`bearer.${token}`);
    let ws;
    try {
      ws = new WebSocket(url, protocols);
    } catch (err) {
      reject(new Error(`Cannot open a WebSocket to ${url}: ${err.message}`));
      return;
    }
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onclose = (ev) => reject(new Error(closeText(ev)));
  });
}

function closeText(ev) {
  const advice = refusalAdvice(ev.reason || "", $("token").value.trim() !== "");
  if (ev.code === 1008 && advice) return `The server refused the connection (code 1008): ${advice}`;
  const hint = CLOSE_HINTS[ev.code] || "the connection closed";
  return `Connection closed (code ${ev.code}): ${hint}${ev.reason ? `: ${ev.reason}` : "."}`;
}

function refusalAdvice(reason, tokenGiven) {
  // the server's refusal reasons (speakflow/auth.py), said in this page's terms
  if (reason.startsWith("X-User-Id header required")) {
    return tokenGiven
      ? "this server does not use tokens (it runs AUTH_MODE=header). Clear the Token field, " +
          "fill in User id and press Start again."
      : "fill in User id (1 to 128 characters) and press Start again.";
  }
  if (reason.startsWith("authentication required")) {
    return "this server requires a token (it runs AUTH_MODE=jwt). Paste a JWT into the Token field.";
  }
  if (reason === "invalid or expired token") {
    return "the token in the Token field is invalid or has expired. Paste a fresh one.";
  }
  if (reason.startsWith("X-User-Id does not match")) {
    return "the User id differs from the token's subject. Clear the User id field.";
  }
  if (reason === "origin not allowed") {
    return `the server does not accept pages from ${location.origin}; its operator can add it to CORS_ORIGINS.`;
  }
  return null;
}

function send(run, obj) {
  if (run.ws && run.ws.readyState === WebSocket.OPEN) run.ws.send(JSON.stringify(obj));
}

function sendChunk(run, source, pcm) {
  if (!run.started || run.stopping) return;
  let c = run.clocks[source];
  if (!c) {
    // timestamp: ms epoch of the chunk's first sample, then counted in samples
    c = run.clocks[source] = { first: Date.now() - (CHUNK_SAMPLES * 1000) / TARGET_RATE, samples: 0 };
  }
  const timestamp = Math.round(c.first + (c.samples * 1000) / TARGET_RATE);
  c.samples += pcm.byteLength / 2;
  panel(source).dataset.chunks = String((c.chunks = (c.chunks || 0) + 1)); // captured, for tests
  // kept until an ack covers it; while the socket is down it waits here for the resume
  const kept = (run.unacked[source] ||= []);
  kept.push({ timestamp, pcm });
  if (kept.length > KEEP_CHUNKS) kept.shift();
  if (!run.resuming && run.ws.readyState === WebSocket.OPEN) writeChunk(run, source, timestamp, pcm);
}

function writeChunk(run, source, timestamp, pcm) {
  run.ws.send(JSON.stringify({
    type: "audio_chunk", session_id: run.sessionId, source, timestamp, size: pcm.byteLength,
  }));
  run.ws.send(pcm);
}

function onAck(run, msg) {
  const kept = run.unacked[msg.source];
  if (!kept || msg.session_id !== run.sessionId) return;
  while (kept.length && kept[0].timestamp <= msg.timestamp) kept.shift();
}

function onMessage(run, ev) {
  if (typeof ev.data !== "string") return;
  let msg;
  try {
    msg = JSON.parse(ev.data);
  } catch {
    showError(`The server sent something that is not JSON: ${ev.data.slice(0, 200)}`);
    return;
  }
  switch (msg.type) {
    case "session_started":
      run.started = true;
      if (run.resuming) {
        // the same session again: what no ack covered, in order, then live audio
        run.resuming = false;
        run.resumes += 1;
        for (const [source, kept] of Object.entries(run.unacked)) {
          for (const chunk of kept) writeChunk(run, source, chunk.timestamp, chunk.pcm);
        }
      }
      run.onStarted();
      history.replaceState(null, "", `#session=${encodeURIComponent(run.sessionId)}`); // reload: shown from the record
      setStatus(
        `Listening${msg.provider ? ` (provider ${msg.provider})` : ""}: speak now.`,
        "live",
      );
      break;
    case "transcript":
      if (msg.is_final) run.finalsThrough[msg.source] = msg.end_time;
      showTranscript(msg);
      break;
    case "ack":
      onAck(run, msg);
      break;
    case "error":
      showError(`Server error ${msg.code}: ${msg.message}`);
      if (!run.started) run.onStarted(shown(`start_session refused: ${msg.code}`));
      else if (run.resuming) finish(run); // the resume was refused: the session is over
      else if (msg.code === "provider_error" && !run.stopping) {
        // the provider refused the stream for good: capturing on would only send audio nowhere
        showError("Transcription stopped: the speech provider refused the stream. Capture is off; " +
          "the server's provider settings need fixing before you press Start again.");
        stop();
      }
      break;
    case "session_ended":
      run.ended = true;
      setStatus("Session ended.", "idle");
      finish(run);
      loadSessions().then(() => showSession(run.sessionId, { quiet: true }));
      break;
    default:
      break;
  }
}

// ---------------------------------------------------------------- lifecycle

async function start(event) {
  event.preventDefault();
  if (current) return;
  const sources = SOURCES.filter((s) => $(`src-${s}`).checked);
  const token = $("token").value.trim();
  let userId = $("user-id").value.trim();
  resetPanels(sources);
  if (sources.length === 0) return showError("Choose at least one source.");
  if (token) {
    userId = tokenSubject(token);
    if (!userId) return showError("The token is not a JWT with a \"sub\" claim.");
  }
  if (!window.isSecureContext || !navigator.mediaDevices || !window.AudioWorkletNode) {
    return showError(
      "This page needs a secure context for the microphone: open it over https:// " +
        "or as http://localhost / http://127.0.0.1.",
    );
  }
  const run = {
    sessionId: randomId(), sources, ws: null, ctx: null, streams: [], nodes: [],
    clocks: {}, started: false, stopping: false, ended: false, onStarted: () => {},
    url: streamUrl(token ? "" : userId), token, unacked: {}, finalsThrough: {},
    resuming: false, resumes: 0,
  };
  current = run;
  setRunning(true);
  try {
    setStatus("Opening audio…");
    // each await can outlast a press of Stop: `live` checks in after it
    const live = (value) => {
      if (run.stopping) throw shown("stopped");
      return value;
    };
    run.ctx = new AudioContext();
    live(await run.ctx.audioWorklet.addModule("static/pcm16-worklet.js"));
    const inputs = {};
    for (const source of sources) {
      const stream = await (source === "microphone" ? openMicrophone() : openDisplayAudio());
      run.streams.push(stream); // released by finish() whatever happens next
      inputs[source] = live(stream);
    }

    setStatus("Connecting…");
    run.ws = await connect(run.url, token);
    live(run.ws);
    attach(run);
    const started = new Promise((resolve, reject) => {
      run.onStarted = (err) => (err ? reject(err) : resolve());
    });
    run.startMsg = {
      type: "start_session", session_id: run.sessionId, user_id: userId, sources,
      audio_config: { sample_rate: TARGET_RATE, channels: 1, encoding: "pcm16le" },
    };
    const language = $("language").value.trim();
    if (language) run.startMsg.language = language;
    send(run, run.startMsg);
    await started;

    const sink = run.ctx.createGain();
    sink.gain.value = 0; // keeps the graph pulled without playing anything back
    sink.connect(run.ctx.destination);
    for (const [source, stream] of Object.entries(inputs)) {
      const node = new AudioWorkletNode(run.ctx, "pcm16-downsampler", {
        processorOptions: { targetRate: TARGET_RATE, chunkSamples: CHUNK_SAMPLES },
      });
      const meter = panel(source).querySelector(".level");
      node.port.onmessage = (ev) => {
        meter.value = ev.data.peak;
        sendChunk(run, source, ev.data.pcm);
      };
      run.ctx.createMediaStreamSource(stream).connect(node);
      node.connect(sink);
      run.nodes.push(node);
      for (const track of stream.getAudioTracks()) {
        track.addEventListener("ended", () => showError(`The ${source} capture ended.`));
      }
    }
    await run.ctx.resume();
    document.body.dataset.capturing = "true";
  } catch (err) {
    if (!err.shown) showError(err.message || String(err));
    finish(run);
  }
}

function attach(run) {
  run.ws.onmessage = (ev) => onMessage(run, ev);
  run.ws.onclose = (ev) => {
    if (run.started && !run.stopping && !run.ended && ev.code !== 1000 && ev.code !== 1008) {
      reconnect(run, ev); // lost mid-session (1006, 1001 restart, 1011): resume it
      return;
    }
    if (!run.ended) showError(closeText(ev));
    run.onStarted(shown(closeText(ev)));
    finish(run);
  };
}

async function reconnect(run, ev) {
  // capture goes on; chunks wait in run.unacked until the session is resumed
  run.resuming = true;
  for (const delay of RECONNECT_DELAYS_MS) {
    setStatus(`${closeText(ev)} Reconnecting…`, "busy");
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (current !== run || run.stopping) return;
    let ws;
    try {
      ws = await connect(run.url, run.token);
    } catch (err) {
      continue; // not reachable yet: the next try
    }
    if (current !== run || run.stopping) {
      ws.close(1000, "done");
      return;
    }
    run.ws = ws;
    attach(run);
    // the finals the page has: the server sends exactly the ones after them, none twice
    send(run, { ...run.startMsg, finals_through: { ...run.finalsThrough } });
    return;
  }
  showError(`${closeText(ev)} Could not reconnect; the session is over.`);
  finish(run);
}

function releaseAudio(run) {
  document.body.dataset.capturing = "false";
  for (const node of run.nodes) {
    node.port.onmessage = null;
    node.disconnect();
  }
  run.nodes = [];
  for (const stream of run.streams) for (const track of stream.getTracks()) track.stop();
  run.streams = [];
  if (run.ctx && !run.ctxClosed) {
    run.ctxClosed = true;
    run.ctx.close();
  }
}

function stop() {
  const run = current;
  if (!run || run.stopping) return;
  run.stopping = true;
  releaseAudio(run);
  if (!run.started || run.resuming) {
    setStatus("Stopped.", "idle");
    run.onStarted(shown("stopped"));
    finish(run);
    return;
  }
  $("stop").disabled = true;
  setStatus("Stopping: waiting for the last finals…");
  send(run, { type: "stop_session", session_id: run.sessionId });
  setTimeout(() => {
    if (current === run && !run.ended) {
      showError("The server did not end the session in time.");
      finish(run);
    }
  }, STOP_WAIT_MS);
}

function finish(run) {
  releaseAudio(run);
  if (run.ws && run.ws.readyState === WebSocket.OPEN) run.ws.close(1000, "done");
  for (const source of SOURCES) panel(source).querySelector(".level").value = 0;
  if (current === run) {
    current = null;
    setRunning(false);
  }
}

// ---------------------------------------------------------------- the transcript record

function identity() {
  const token = $("token").value.trim();
  if (token) return { Authorization: `Bearer ${token}` };
  const user = $("user-id").value.trim();
  return user ? { "X-User-Id": user } : {};
}

async function api(path, params = {}) {
  const url = new URL(path, location.href); // relative: works under a proxy prefix
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const r = await fetch(url, { headers: identity() });
  if (!r.ok) {
    let body = {};
    try {
      body = await r.json();
    } catch {}
    const err = new Error(body.message || `HTTP ${r.status}`);
    err.status = r.status;
    err.advice = r.status === 401 ? refusalAdvice(body.message || "", "Authorization" in identity()) : null;
    throw err;
  }
  return r;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function describe(meta) {
  const audio = Object.entries(meta.sources || {})
    .map(([src, s]) => `${src} ${clock(s.audio_s)}`)
    .join(", ");
  const ended = meta.state === "ended" ? `ended ${when(meta.ended_at)} (${meta.end_reason})` : meta.state;
  return `${when(meta.created_at)}; ${ended}; ${meta.finals} finals; audio ${audio || "none"}`;
}

async function loadSessions() {
  const status = $("history-status");
  const list = $("sessions");
  try {
    const page = await (await api("v1/sessions", { limit: 50 })).json();
    list.replaceChildren(
      ...page.sessions.map((meta) => {
        const li = document.createElement("li");
        const open = document.createElement("button");
        open.type = "button";
        open.textContent = "Show";
        open.addEventListener("click", () => showSession(meta.id));
        const small = document.createElement("small");
        small.textContent = describe(meta);
        li.dataset.id = meta.id;
        li.append(open, document.createTextNode(`${meta.session_id} `), small);
        return li;
      }),
    );
    status.textContent = page.sessions.length ? "" : "No stored sessions for this user yet.";
  } catch (err) {
    list.replaceChildren();
    status.textContent =
      err.status === 503
        ? `Transcripts are not kept: ${err.message}.`
        : `Past sessions unavailable: ${err.advice || err.message}`;
  }
}

async function showSession(id, { quiet = false } = {}) {
  let doc;
  try {
    doc = await (await api(`v1/sessions/${encodeURIComponent(id)}/transcript`, { format: "json" })).json();
  } catch (err) {
    if (!quiet) $("history-status").textContent = `Cannot show session ${id}: ${err.advice || err.message}`;
    return;
  }
  const viewer = $("viewer");
  viewer.dataset.id = doc.session.id;
  viewer.dataset.sessionId = doc.session.session_id;
  $("viewer-title").textContent = `Transcript of ${doc.session.session_id}`;
  $("viewer-meta").textContent = describe(doc.session);
  $("export-status").textContent = "";
  $("viewer-lines").replaceChildren(
    ...doc.segments.map((seg) => {
      const li = document.createElement("li");
      const time = document.createElement("time");
      time.textContent = clock(seg.start);
      const who = document.createElement("span");
      who.className = "speaker";
      who.textContent = seg.speaker;
      li.dataset.source = seg.source;
      li.append(time);
      if (seg.language) li.append(langLabel(seg.language));
      li.append(who, document.createTextNode(seg.text));
      return li;
    }),
  );
  viewer.hidden = false;
  history.replaceState(null, "", `#session=${encodeURIComponent(doc.session.id)}`);
}

async function exportText(fmt) {
  const id = $("viewer").dataset.id;
  return (await api(`v1/sessions/${encodeURIComponent(id)}/transcript`, { format: fmt })).text();
}

async function copyFormat(fmt) {
  const status = $("export-status");
  try {
    const text = await exportText(fmt);
    await navigator.clipboard.writeText(text);
    status.textContent = `Copied the ${fmt} transcript (${text.length} characters).`;
  } catch (err) {
    status.textContent = `Could not copy: ${err.advice || err.message}`;
  }
}

async function downloadFormat(fmt) {
  const status = $("export-status");
  try {
    const text = await exportText(fmt);
    const name = `${($("viewer").dataset.sessionId || "session").replace(/[^A-Za-z0-9_-]/g, "_")}.${fmt}`;
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: FORMATS[fmt] }));
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    status.textContent = `Downloaded ${name}.`;
  } catch (err) {
    status.textContent = `Could not download: ${err.advice || err.message}`;
  }
}

function init() {
  const user = $("user-id");
  user.value = localStorage.getItem("speakflow.user_id") || `browser-${randomId().slice(0, 8)}`;
  user.addEventListener("change", () => {
    localStorage.setItem("speakflow.user_id", user.value.trim());
    loadSessions();
  });
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    $("src-system").dataset.unsupported = "true";
    $("src-system").disabled = true;
    $("src-system").parentElement.title = "This browser cannot share tab or system audio";
  }
  $("controls").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  $("refresh").addEventListener("click", loadSessions);
  for (const el of document.querySelectorAll("[data-copy]")) {
    el.addEventListener("click", () => copyFormat(el.dataset.copy));
  }
  for (const el of document.querySelectorAll("[data-download]")) {
    el.addEventListener("click", () => downloadFormat(el.dataset.download));
  }
  document.body.dataset.capturing = "false";
  setStatus("Ready: press Start.", "idle");
  loadSessions();
  const viewing = new URLSearchParams(location.hash.slice(1)).get("session");
  if (viewing) showSession(viewing); // a reload keeps the transcript on screen
}

init();

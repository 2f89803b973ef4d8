// SpeakFlow browser test page: capture -> PCM16 16 kHz (AudioWorklet) -> protocol.md over
// one WebSocket -> partials and finals per source. Plain ES module, no build step.
//
// Browsers cannot set headers on a WebSocket, so the page names its user with the
// query parameter ?user_id= (AUTH_MODE=header) and sends a token as the subprotocol
// "bearer.<jwt>" (AUTH_MODE=jwt). Microphone and AudioWorklet need a secure context:
// https://, or http://localhost / http://127.0.0.1.

const TARGET_RATE = 16000;
const CHUNK_SAMPLES = 8000; // 500 ms, as the desktop client sends
const SOURCES = ["microphone", "system"];
const STOP_WAIT_MS = 60000;

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

function showTranscript(msg) {
  const p = panel(msg.source);
  if (!p) return;
  if (msg.is_final) {
    if (msg.text.trim()) {
      const li = document.createElement("li");
      const time = document.createElement("time");
      time.textContent = clock(msg.start_time);
      li.append(time, document.createTextNode(msg.text));
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
    p.querySelector(".level").value = 0;
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
  const hint = CLOSE_HINTS[ev.code] || "the connection closed";
  return `Connection closed (code ${ev.code}): ${hint}${ev.reason ? `: ${ev.reason}` : "."}`;
}

function send(run, obj) {
  if (run.ws && run.ws.readyState === WebSocket.OPEN) run.ws.send(JSON.stringify(obj));
}

function sendChunk(run, source, pcm) {
  if (!run.started || run.stopping || run.ws.readyState !== WebSocket.OPEN) return;
  let c = run.clocks[source];
  if (!c) {
    // timestamp: ms epoch of the chunk's first sample, then counted in samples
    c = run.clocks[source] = { first: Date.now() - (CHUNK_SAMPLES * 1000) / TARGET_RATE, samples: 0 };
  }
  const timestamp = Math.round(c.first + (c.samples * 1000) / TARGET_RATE);
  c.samples += pcm.byteLength / 2;
  run.ws.send(JSON.stringify({
    type: "audio_chunk", session_id: run.sessionId, source, timestamp, size: pcm.byteLength,
  }));
  run.ws.send(pcm);
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
      run.onStarted();
      setStatus(
        `Listening${msg.provider ? ` (provider ${msg.provider})` : ""}: speak now.`,
        "live",
      );
      break;
    case "transcript":
      showTranscript(msg);
      break;
    case "error":
      showError(`Server error ${msg.code}: ${msg.message}`);
      if (!run.started) run.onStarted(shown(`start_session refused: ${msg.code}`));
      break;
    case "session_ended":
      run.ended = true;
      setStatus("Session ended.", "idle");
      finish(run);
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
    run.ws = await connect(streamUrl(token ? "" : userId), token);
    live(run.ws);
    run.ws.onmessage = (ev) => onMessage(run, ev);
    run.ws.onclose = (ev) => {
      if (!run.ended) showError(closeText(ev));
      run.onStarted(shown(closeText(ev)));
      finish(run);
    };
    const started = new Promise((resolve, reject) => {
      run.onStarted = (err) => (err ? reject(err) : resolve());
    });
    const startMsg = {
      type: "start_session", session_id: run.sessionId, user_id: userId, sources,
      audio_config: { sample_rate: TARGET_RATE, channels: 1, encoding: "pcm16le" },
    };
    const language = $("language").value.trim();
    if (language) startMsg.language = language;
    send(run, startMsg);
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
  } catch (err) {
    if (!err.shown) showError(err.message || String(err));
    finish(run);
  }
}

function releaseAudio(run) {
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
  if (!run.started) {
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

function init() {
  const user = $("user-id");
  user.value = localStorage.getItem("speakflow.user_id") || `browser-${randomId().slice(0, 8)}`;
  user.addEventListener("change", () => localStorage.setItem("speakflow.user_id", user.value.trim()));
  if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) {
    $("src-system").dataset.unsupported = "true";
    $("src-system").disabled = true;
    $("src-system").parentElement.title = "This browser cannot share tab or system audio";
  }
  $("controls").addEventListener("submit", start);
  $("stop").addEventListener("click", stop);
  setStatus("Ready: press Start.", "idle");
}

init();

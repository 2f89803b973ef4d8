"""The /docs page: the HTTP routes and the WebSocket protocol for a human reader.

The error table is generated from the same enum the server uses, so it
cannot drift from the code. The machine-readable contract is
:mod:`speakflow.openapi`.
"""

from __future__ import annotations

import html
import json

from . import protocol as p

_EXAMPLES = {
    "start_session": {
        "type": "start_session",
        "session_id": "550e8400-e29b-41d4-a716-446655440000",
        "user_id": "user123",
        "sources": ["microphone", "system"],
        "audio_config": {"sample_rate": 16000, "channels": 1, "encoding": "pcm16le"},
    },
    "audio_chunk": {
        "type": "audio_chunk",
        "session_id": "550e8400-e29b-41d4-a716-446655440000",
        "source": "microphone",
        "timestamp": 1717000000123,
        "size": 16000,
    },
    "stop_session": {"type": "stop_session", "session_id": "550e8400-..."},
    "session_started": {
        "type": "session_started",
        "session_id": "550e8400-...",
        "provider": "whisper_local",
        "sources": ["microphone", "system"],
    },
    "transcript": {
        "type": "transcript",
        "session_id": "550e8400-...",
        "source": "microphone",
        "text": "Hello, how are you?",
        "is_final": False,
        "timestamp": 1717000001234,
        "provider": "whisper_local",
        "language": "en",
        "start_time": 0.0,
        "end_time": 0.5,
    },
    "session_ended": {"type": "session_ended", "session_id": "550e8400-..."},
    "error": {
        "type": "error",
        "code": p.ErrorCode.UNKNOWN_SESSION,
        "message": "session 'x' is not the active session of this connection",
        "session_id": "x",
    },
}


def _example(name: str) -> str:
    return f"<pre>{html.escape(json.dumps(_EXAMPLES[name], indent=2))}</pre>"


def docs_html(providers: list[str]) -> str:
    rows = "\n".join(
        f"<tr><td><code>{code.value}</code></td><td>{html.escape(p.ERROR_DESCRIPTIONS[code])}</td></tr>"
        for code in p.ErrorCode
    )
    provider_list = ", ".join(f"<code>{html.escape(x)}</code>" for x in providers)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SpeakFlow stream server</title>
<style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
  line-height:1.5}}
pre{{background:#f4f4f4;padding:.6rem;overflow:auto}} code{{background:#f4f4f4}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
</style></head><body>
<h1>SpeakFlow stream server</h1>
<p>A real-time speech-to-text relay. Clients stream PCM16 16&nbsp;kHz mono audio over one
WebSocket; the server relays each (session, source) stream to the configured speech provider
({provider_list}) and sends back partial and final transcripts in one schema.</p>

<h2>HTTP routes</h2>
<table><tr><th>route</th><th>what</th></tr>
<tr><td><code>GET /v1/health</code></td><td><code>{{"status":"ok","active_sessions":N}}</code>
plus provider readiness and counters</td></tr>
<tr><td><code>WS /v1/stt/stream</code></td><td>the streaming protocol below</td></tr>
<tr><td><code>GET /v1/sessions</code></td><td>your stored sessions, newest first
(<code>?limit=</code> up to 200, <code>?cursor=</code> the previous page's
<code>next_cursor</code>)</td></tr>
<tr><td><code>GET /v1/sessions/{{id}}</code></td><td>one session: user, created/ended, how it
ended (<code>stopped</code>, <code>expired</code>, <code>shutdown</code>), providers, audio
seconds per source, resumes, number of finals</td></tr>
<tr><td><code>GET /v1/sessions/{{id}}/transcript?format=json|md|srt|vtt|txt</code></td>
<td>both sources merged in time order on one clock, labelled (&ldquo;You&rdquo; /
&ldquo;Meeting&rdquo; by default: TRANSCRIPT_LABEL_MICROPHONE, TRANSCRIPT_LABEL_SYSTEM);
<code>&amp;download=1</code> for a file</td></tr>
<tr><td><code>DELETE /v1/sessions/{{id}}</code></td><td>delete that record (204)</td></tr>
<tr><td><code>GET /</code></td><td>the browser page: speak into the microphone, see your
past sessions</td></tr>
<tr><td><code>GET /metrics</code></td><td>Prometheus metrics of this instance (scrape every
instance)</td></tr>
<tr><td><code>GET /docs</code></td><td>this page</td></tr>
<tr><td><code>GET /openapi.json</code></td><td>OpenAPI 3.1 document of the HTTP routes and
JSON Schemas of every WebSocket message</td></tr>
</table>

<h2>Transcript record</h2>
<p>Every final of every session is kept (TRANSCRIPT_STORE: SQLite by default, PostgreSQL by
URL, <code>off</code>), also while the client is away. The <code>/v1/sessions</code> routes
identify the caller as the WebSocket does: header <code>X-User-Id</code> (AUTH_MODE=header) or
<code>Authorization: Bearer &lt;jwt&gt;</code> (AUTH_MODE=jwt, its <code>sub</code>). Another
user's session answers <b>404</b>, like one that does not exist. <code>{{id}}</code> is the
record's <code>id</code> or your <code>session_id</code>. Errors are
<code>{{"error": code, "message": text}}</code>: 401 <code>unauthorized</code>, 404
<code>not_found</code>, 400 <code>bad_request</code>, 503 <code>store_off</code> /
<code>store_unavailable</code>.</p>
<p>Webhook (TRANSCRIPT_WEBHOOK_URL): when a session is stopped or its resume window expires,
the server POSTs the <code>json</code> transcript with header
<code>X-SpeakFlow-Signature: t=&lt;unix s&gt;,v1=&lt;hex HMAC-SHA256(secret, "&lt;t&gt;." +
body)&gt;</code> (refuse a <code>t</code> over 300&nbsp;s from your clock) and
<code>X-SpeakFlow-Delivery</code> (the same on each retry). Non-2xx answers are retried with
backoff.</p>
<p>Audio chunks of a session this connection did not start are refused with one
<code>error</code> per session id. Exception: chunks of your own session that is waiting for a
resume (SpeakFlow Desktop stopped while offline) are taken and transcribed into its record.</p>

<h2>WebSocket protocol (v1)</h2>
<h3>Handshake</h3>
<p>Send header <code>X-User-Id: &lt;id&gt;</code> (1-128 characters). Without it the server
accepts and then closes with code <b>1008</b>. The server answers pings; permessage-deflate
is accepted.</p>
<p>When the server runs with <code>AUTH_MODE=jwt</code>, header
<code>Authorization: Bearer &lt;jwt&gt;</code> is required instead (browsers, which cannot set
headers: subprotocols <code>["speakflow", "bearer.&lt;jwt&gt;"]</code>); your user id is the
token's <code>sub</code>, and an <code>X-User-Id</code> that differs is refused. A browser's
<code>Origin</code> must be the server's own or listed in CORS_ORIGINS.</p>
<table><tr><th>close code</th><th>when</th></tr>
<tr><td>1008</td><td>identity missing or refused (the reason never says why a token failed),
or Origin not allowed</td></tr>
<tr><td>1009</td><td>a message larger than WS_MAX_MESSAGE_BYTES</td></tr>
<tr><td>1001</td><td>no message for IDLE_TIMEOUT_S (reconnect to stream again)</td></tr>
</table>

<h3>Client &rarr; server</h3>
<p>Every text frame is one JSON object with a <code>type</code>; binary frames carry audio only.</p>
<h4>start_session</h4>{_example("start_session")}
<p><code>user_id</code> must equal <code>X-User-Id</code>. <code>sources</code>: distinct values
of <code>microphone</code>, <code>system</code>. Optional: <code>language</code>,
<code>provider</code> (honoured only if the operator sets ALLOW_PROVIDER_OVERRIDE).</p>
<h4>audio_chunk (two frames)</h4>{_example("audio_chunk")}
<p>immediately followed by one binary frame of exactly <code>size</code> bytes of PCM16 LE mono
16&nbsp;kHz audio. A valid source not listed in <code>start_session</code> joins on its first
chunk.</p>
<h4>stop_session</h4>{_example("stop_session")}
<p>Every provider stream is finalized, remaining finals are sent, then
<code>session_ended</code>. The connection stays open for another session.</p>

<h3>Server &rarr; client</h3>
<h4>session_started</h4>{_example("session_started")}
<h4>transcript</h4>{_example("transcript")}
<p><code>start_time</code>/<code>end_time</code>: seconds of this source's audio since the first
sample the session received for it. <code>timestamp</code>: the first chunk's timestamp +
<code>end_time</code>&times;1000. Partials (<code>is_final:false</code>) may be revised; a final
is never revised or repeated.</p>
<h4>session_ended</h4>{_example("session_ended")}
<h4>error</h4>{_example("error")}
<p>An error never closes the connection and never affects another session.</p>
<h4>ack (cluster deployments, REDIS_URL set)</h4>
<pre>{{"type": "ack", "session_id": "550e8400-...", "source": "microphone",
 "timestamp": 1700000001500}}</pre>
<p>Audio of <code>source</code> up to and including the chunk stamped <code>timestamp</code> is
covered by finals stored in the cluster: a client may forget those chunks. Sent after the final
that covers them. On resume (any instance, same user and session id), a client replays the
chunks not yet acknowledged; the server drops those it already has. If the instance holding a
session dies, finals it had produced are delivered on resume, none twice. A resuming client may
add <code>"finals_through": {{"microphone": 12.48}}</code> to <code>start_session</code> (per
source, the <code>end_time</code> of the last final it has): it then gets exactly the finals after
it; without it, it gets those never written to its socket. A client that ignores <code>ack</code>
(and replays only chunks it never sent) can lose at most the utterance in flight at the crash.
Unknown message types may be ignored.</p>

<h3>Error codes</h3>
<table><tr><th>code</th><th>when</th></tr>
{rows}
</table>
</body></html>
"""

// The chat page served at /: one HTML document with its style and script inline, nothing fetched
// from elsewhere, so it works on a machine without a network. It talks to the same endpoints as
// any client: /v1/chat/completions (or /v1/completions) with "stream": true, reading the
// server-sent events with fetch() as they arrive; Stop aborts the fetch, which closes the
// connection, which cancels the generation on the server.
#include "serve/server.h"

namespace lsb::serve {

const std::string& chat_page_html() {
  static const std::string page = R"LSBPAGE(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lsb chat</title>
<style>
  :root { --bg:#f6f6f3; --fg:#1d1d1b; --muted:#6b6b66; --line:#d8d8d2; --me:#e4ecf7; --bot:#ffffff; --accent:#2f5f9e; }
  * { box-sizing: border-box; }
  body { margin:0; font: 15px/1.45 system-ui, sans-serif; background:var(--bg); color:var(--fg);
         display:flex; flex-direction:column; height:100vh; }
  header { padding:8px 14px; border-bottom:1px solid var(--line); display:flex; gap:14px; align-items:center; flex-wrap:wrap; }
  header h1 { font-size:16px; margin:0; }
  header .info { color:var(--muted); font-size:13px; }
  header label { font-size:13px; color:var(--muted); }
  header input, header select { font:inherit; font-size:13px; padding:2px 4px; }
  header input[type=number] { width:70px; }
  #log { flex:1; overflow-y:auto; padding:14px; display:flex; flex-direction:column; gap:10px; }
  .msg { max-width:52em; padding:8px 12px; border-radius:8px; border:1px solid var(--line); white-space:pre-wrap; word-wrap:break-word; }
  .user { align-self:flex-end; background:var(--me); }
  .assistant { align-self:flex-start; background:var(--bot); }
  .error { align-self:stretch; background:#fbeaea; border-color:#e0b4b4; color:#7a1f1f; }
  .meta { font-size:12px; color:var(--muted); margin-top:4px; white-space:normal; }
  form { display:flex; gap:8px; padding:10px 14px; border-top:1px solid var(--line); }
  textarea { flex:1; font:inherit; padding:8px; resize:vertical; min-height:44px; height:60px; }
  button { font:inherit; padding:6px 16px; border:1px solid var(--accent); background:var(--accent); color:#fff; border-radius:6px; cursor:pointer; }
  button.secondary { background:#fff; color:var(--accent); }
  button:disabled { opacity:.5; cursor:default; }
</style>
</head>
<body>
<header>
  <h1>lsb chat</h1>
  <span class="info" id="info">connecting…</span>
  <label>mode <select id="mode"><option value="chat">chat</option><option value="completion">completion</option></select></label>
  <label>max tokens <input id="maxTokens" type="number" min="1" value="200"></label>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7"></label>
  <label>API key <input id="apiKey" type="password" size="12" placeholder="(none)"></label>
  <button type="button" class="secondary" id="reset">New chat</button>
</header>
<main id="log" aria-live="polite"></main>
<form id="form">
  <textarea id="input" placeholder="Write a message; Enter sends, Shift+Enter starts a new line" autofocus></textarea>
  <button type="submit" id="send">Send</button>
  <button type="button" class="secondary" id="stop" disabled>Stop</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const log = $("log"), input = $("input"), sendBtn = $("send"), stopBtn = $("stop");
let history = [];        // the conversation sent with each chat request
let controller = null;   // aborts the request in flight (Stop)
let modelId = null;

$("apiKey").value = localStorage.getItem("lsb-api-key") || "";
$("apiKey").addEventListener("change", () => localStorage.setItem("lsb-api-key", $("apiKey").value));

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apiKey").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

function add(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  log.appendChild(div);
  log.scrollTop = log.scrollHeight;
  return div;
}

async function loadInfo() {
  try {
    const h = await (await fetch("/health")).json();
    modelId = h.model;
    const tmpl = h.chat_template ? "chat template " + h.chat_template : "no chat template";
    $("info").textContent = `${h.model} · context ${h.ctx} · ${h.threads} threads · ${tmpl}`;
    if (!h.chat_template) $("mode").value = "completion";
  } catch (e) {
    $("info").textContent = "server not reachable: " + e;
  }
}

// Reads server-sent events from a fetch() body: calls onData with each parsed data payload.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  const chat = $("mode").value === "chat";
  const body = {
    model: modelId || undefined,
    max_tokens: Number($("maxTokens").value) || undefined,
    temperature: Number($("temperature").value),
    stream: true,
    stream_options: { include_usage: true },
  };
  if (chat) {
    history.push({ role: "user", content: text });
    body.messages = history;
  } else {
    body.prompt = text;
  }
  add("user", text);
  const out = add("assistant", "");
  out.classList.add("streaming");
  const meta = document.createElement("div");
  meta.className = "meta";
  let answer = "", finish = null, usage = null, timings = null;
  controller = new AbortController();
  sendBtn.disabled = true; stopBtn.disabled = false;
  try {
    const res = await fetch(chat ? "/v1/chat/completions" : "/v1/completions",
                            { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!res.ok) {
      let msg = res.status + " " + res.statusText;
      try { msg = (await res.json()).error.message; } catch (e) {}
      throw new Error(msg);
    }
    await readEvents(res, (ev) => {
      if (ev.error) throw new Error(ev.error.message);
      if (ev.usage) { usage = ev.usage; timings = ev.timings; }
      for (const c of ev.choices || []) {
        const piece = chat ? (c.delta && c.delta.content) || "" : c.text || "";
        answer += piece;
        out.firstChild ? (out.firstChild.nodeValue = answer) : out.appendChild(document.createTextNode(answer));
        if (c.finish_reason) finish = c.finish_reason;
      }
      log.scrollTop = log.scrollHeight;
    });
  } catch (e) {
    if (e.name === "AbortError") finish = "stopped";
    else { out.remove(); add("error", "Error: " + e.message); if (chat) history.pop(); }
  } finally {
    controller = null;
    sendBtn.disabled = false; stopBtn.disabled = true;
    out.classList.remove("streaming");
    out.classList.add("done");
  }
  if (!out.isConnected) return;
  if (chat) history.push({ role: "assistant", content: answer });
  const parts = [];
  if (finish) parts.push(finish);
  if (usage) parts.push(`${usage.prompt_tokens} + ${usage.completion_tokens} tokens`);
  if (timings && timings.predicted_per_second) parts.push(`${timings.predicted_per_second.toFixed(1)} tok/s`);
  meta.textContent = parts.join(" · ");
  out.appendChild(meta);
}

$("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value.trim();
  if (!text || controller) return;
  input.value = "";
  send(text);
});
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("form").requestSubmit(); }
});
stopBtn.addEventListener("click", () => { if (controller) controller.abort(); });
$("reset").addEventListener("click", () => { if (controller) controller.abort(); history = []; log.textContent = ""; });
loadInfo();
</script>
</body>
</html>
)LSBPAGE";
  return page;
}

}  // namespace lsb::serve

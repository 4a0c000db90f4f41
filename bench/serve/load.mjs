// Load on `lsb serve` (issue 13, must-show 3): C concurrent clients send R requests in all (a
// mix of completions and chat completions, streamed and not, greedy and seeded sampling); every
// answer is checked against the answer the same request got alone before the load, so "answered
// completely" means the whole text, the finish reason and the usage. A request is either answered
// completely or refused with 503 + Retry-After + an OpenAI error body (queue full); anything else
// (a connection error, a cut stream, a different text) counts as lost. The server runs under GNU
// time -v: its peak RSS is the kernel's (ru_maxrss), and /proc/PID/status VmRSS is sampled too.
//   node bench/serve/load.mjs [--model PATH] [--clients 8] [--requests 200] [--queue 16]
//        [--mem-budget SIZE] [--ctx 256] [--threads 2] [--json]
// Exit status 1 when a request was lost or the peak RSS exceeds --mem-budget.
import { readFileSync } from "node:fs";
import { BOOKWORM, check, failed, peakRssFromTime, startServer } from "./lib.mjs";

const opt = { model: BOOKWORM, clients: 8, requests: 200, queue: 16, "mem-budget": "", ctx: 256, threads: 2, json: false };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, "");
  if (!(k in opt)) throw new Error(`unknown option ${process.argv[i]}`);
  opt[k] = typeof opt[k] === "boolean" ? true : typeof opt[k] === "number" ? Number(process.argv[++i]) : process.argv[++i];
}
const budgetMiB = opt["mem-budget"] ? Number(/^(\d+)[Mm]$/.exec(opt["mem-budget"])?.[1] ?? NaN) : null;
if (budgetMiB !== null && !(budgetMiB > 0)) throw new Error("--mem-budget: give it in MiB, e.g. 64M");

const args = ["--chat-template", "chatml", "-t", String(opt.threads), "--ctx", String(opt.ctx), "--queue", String(opt.queue), "-q"];
if (budgetMiB) args.push("--mem-budget", opt["mem-budget"]);
const server = await startServer(opt.model, args, { wrap: ["/usr/bin/time", "-v"] });
console.log(`lsb serve ${args.join(" ")} on ${server.base} (pid ${server.info.pid})`);

// /proc sampling of the server's resident set while the load runs.
let sampledMax = 0;
const sampler = setInterval(() => {
  try {
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.info.pid}/status`, "utf8"))[1]);
    sampledMax = Math.max(sampledMax, kb / 1024);
  } catch {}
}, 20);

// The request kinds: prompts × endpoint × sampling; stream alternates per request.
const prompts = ["It is a truth universally acknowledged", "In the beginning God created", "The old house stood", "To be, or not to be"];
const kinds = [];
for (const p of prompts) {
  kinds.push({ path: "/v1/completions", body: { prompt: p, max_tokens: 24, temperature: 0 } });
  kinds.push({ path: "/v1/completions", body: { prompt: p, max_tokens: 16, temperature: 0.8, top_p: 0.95, seed: 7 } });
  kinds.push({ path: "/v1/chat/completions", body: { messages: [{ role: "user", content: p }], max_tokens: 20, temperature: 0 } });
}

const textOf = (path, j) => (path === "/v1/completions" ? j.choices[0].text : j.choices[0].message.content);

// One request; resolves { kind, status, text, finish, usage } or { lost: reason }.
async function request(kind, stream) {
  const body = { ...kind.body, model: server.info.model, ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}) };
  let res;
  try {
    res = await fetch(server.base + kind.path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    return { lost: `connection: ${e.cause?.code ?? e}` };
  }
  if (res.status === 503) {
    const j = await res.json().catch(() => null);
    if (j?.error?.code === "queue_full" && res.headers.get("retry-after")) return { refused: true };
    return { lost: `503 without an OpenAI error body: ${JSON.stringify(j)}` };
  }
  if (res.status !== 200) return { lost: `status ${res.status}: ${await res.text()}` };
  if (!stream) {
    const j = await res.json();
    return { text: textOf(kind.path, j), finish: j.choices[0].finish_reason, tokens: j.usage.completion_tokens };
  }
  const raw = await res.text().catch((e) => null);
  if (raw === null) return { lost: "stream cut" };
  const events = raw.split("\n\n").filter((e) => e.length);
  if (events[events.length - 1] !== "data: [DONE]") return { lost: `stream without [DONE]: ${raw.slice(-200)}` };
  let text = "", finish = null, tokens = null;
  for (const e of events.slice(0, -1)) {
    const j = JSON.parse(e.slice(6));
    if (j.error) return { lost: `error event: ${j.error.message}` };
    if (j.usage) tokens = j.usage.completion_tokens;
    for (const c of j.choices) {
      text += kind.path === "/v1/completions" ? c.text : c.delta?.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, tokens };
}

// The reference answers, one request at a time, before the load.
const reference = [];
for (const k of kinds) {
  const r = await request(k, false);
  if (!r.text && r.text !== "") throw new Error(`reference request failed: ${JSON.stringify(r)}`);
  reference.push(r);
}

let next = 0, complete = 0, refused = 0, streamed = 0;
const lost = [];
const latencies = [];
const t0 = performance.now();
async function client() {
  while (next < opt.requests) {
    const i = next++;
    const k = i % kinds.length, stream = i % 2 === 1;
    const ts = performance.now();
    const r = await request(kinds[k], stream);
    if (r.refused) {
      refused++;
      continue;
    }
    if (r.lost) {
      lost.push(`#${i}: ${r.lost}`);
      continue;
    }
    const want = reference[k];
    if (r.text !== want.text || r.finish !== want.finish || r.tokens !== want.tokens) {
      lost.push(`#${i}: answer differs: ${JSON.stringify(r)} vs ${JSON.stringify(want)}`);
      continue;
    }
    complete++;
    if (stream) streamed++;
    latencies.push(performance.now() - ts);
  }
}
await Promise.all(Array.from({ length: opt.clients }, client));
const wall = (performance.now() - t0) / 1000;
clearInterval(sampler);

// The server still serves after the load.
const after = await request(kinds[0], false);
const { code, stderr } = await server.stop();
const peak = peakRssFromTime(stderr);
latencies.sort((a, b) => a - b);
const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : NaN);
const summary = {
  clients: opt.clients, requests: opt.requests, queue: opt.queue, mem_budget_mib: budgetMiB, ctx: opt.ctx, threads: opt.threads,
  complete, streamed, refused_503: refused, lost: lost.length, wall_s: +wall.toFixed(1), requests_per_s: +(opt.requests / wall).toFixed(2),
  latency_ms: { p50: Math.round(q(0.5)), p90: Math.round(q(0.9)), max: Math.round(q(1)) },
  peak_rss_mib_time_v: +peak.toFixed(1), peak_rss_mib_proc_sampled: +sampledMax.toFixed(1),
};
console.log(`${complete} complete (${streamed} streamed), ${refused} refused with 503, ${lost.length} lost, in ${wall.toFixed(1)} s (${summary.requests_per_s} req/s); latency p50 ${summary.latency_ms.p50} ms, p90 ${summary.latency_ms.p90} ms`);
console.log(`peak RSS: ${peak.toFixed(1)} MiB (GNU time -v, ru_maxrss), ${sampledMax.toFixed(1)} MiB (largest /proc VmRSS sample)${budgetMiB ? `; --mem-budget ${budgetMiB} MiB` : ""}`);
for (const l of lost.slice(0, 10)) console.log(`  lost ${l}`);
check(complete + refused === opt.requests && lost.length === 0, `all ${opt.requests} requests answered completely or refused with 503`);
check(after.text === reference[0].text, "the server answers after the load");
if (budgetMiB) check(peak <= budgetMiB, `peak RSS ${peak.toFixed(1)} MiB within --mem-budget ${budgetMiB} MiB`);
check(code === 0, "lsb serve stops cleanly", `exit ${code}\n${stderr.slice(-2000)}`);
if (opt.json) console.log(JSON.stringify(summary));
process.exit(failed() ? 1 : 0);

// Prompt and decode speed through `lsb serve` against `lsb bench` on the same model and threads
// (issue 13, must-show 5). lsb bench times prompt processing and decoding as separate tests (as
// llama-bench does pp and tg): a forward pass over a batch of P prompt tokens, and D tokens
// decoded one at a time. The server gets the same two pieces of work: a prompt request (a
// completion whose prompt is P token ids and whose answer is one token, not streamed) and a
// decode request (the same prompt, D answer tokens, streamed; ignore_eos, greedy). Two readings
// of the server: the engine's own timings (the "timings" object) and the client's clock (prompt:
// P / the prompt request's whole round trip; decode: (D-1) / time from the first chunk to the
// last), over a keep-alive connection as the openai package uses. A third reading is printed
// but not judged: P / time to the first chunk of the decode request, where the client receives
// that chunk while the engine already decodes the next tokens on both cores.
// Rounds alternate one lsb bench run (--reps 3: its median leaves out a first repetition that
// pays for first touches) and three pairs of requests (their median, likewise), so that both see
// the same load on the machine; the medians are compared, and must agree within 10 %.
//   node bench/serve/speed.mjs [--model PATH] [--threads 2] [--prompt 128] [--decode 64] [--rounds 9]
import { execFileSync } from "node:child_process";
import http from "node:http";
import { BOOKWORM, LSB, check, failed, startServer } from "./lib.mjs";

const opt = { model: BOOKWORM, threads: 2, prompt: 128, decode: 64, rounds: 9 };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, "");
  if (!(k in opt)) throw new Error(`unknown option ${process.argv[i]}`);
  opt[k] = k === "model" ? process.argv[i + 1] : Number(process.argv[i + 1]);
}
const P = opt.prompt, D = opt.decode, T = String(opt.threads);
const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

function bench() {
  const j = JSON.parse(execFileSync(LSB, ["bench", opt.model, "-t", T, "--prompt-tokens", String(P), "--decode-tokens", String(D), "--reps", "3", "--json"], { encoding: "utf8" }));
  const m = (j.models ?? j.results ?? [j])[0];
  return { prompt: m.prompt_tok_per_s.median, decode: m.decode_tok_per_s.median };
}

// One streamed request over `agent` (node:http, keep-alive): resolves with the body's chunks as
// they arrive, each with its arrival time. A keep-alive connection, as the openai package and
// browsers use, is reused within a round; each round makes a new agent, because the server closes
// a connection idle for 5 s (cpp-httplib's keep-alive timeout) while lsb bench runs.
function post(base, path, body, agent) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    const req = http.request(`${base}${path}`, { method: "POST", agent, headers: { "Content-Type": "application/json" } }, (res) => {
      res.on("data", (d) => chunks.push({ at: performance.now(), d }));
      res.on("end", () => resolve(chunks));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(JSON.stringify(body));
  });
}

async function viaServer(base, agent) {
  const prompt = [1, ...Array.from({ length: P - 1 }, (_, i) => 100 + ((i * 37) % 7000))];
  // The prompt request: the whole round trip, prompt processing and one sampled token.
  const tp = performance.now();
  const answer = await post(base, "/v1/completions", { prompt, max_tokens: 1, temperature: 0, ignore_eos: true }, agent);
  const prompt_s = (answer.at(-1).at - tp) / 1000;
  const pj = JSON.parse(Buffer.concat(answer.map((c) => c.d)).toString("utf8"));
  if (pj.usage?.prompt_tokens !== P) throw new Error(`the server counted ${pj.usage?.prompt_tokens} prompt tokens, not ${P}`);

  // The decode request, streamed.
  const t0 = performance.now();
  const chunks = await post(base, "/v1/completions",
    { prompt, max_tokens: D, temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true } }, agent);
  const dec = new TextDecoder();
  let buf = "", first = null, last = null, timings = null, tokens = 0;
  for (const { at: now, d } of chunks) {
    buf += dec.decode(d, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(6, cut);
      buf = buf.slice(cut + 2);
      if (ev === "[DONE]") continue;
      const j = JSON.parse(ev);
      if (j.usage) {
        timings = j.timings;
        tokens = j.usage.completion_tokens;
      } else if (j.choices[0].text) {
        first ??= now;
        last = now;
      }
    }
  }
  if (tokens !== D) throw new Error(`the server answered ${tokens} tokens, not ${D}`);
  return {
    engine_prompt: pj.timings.prompt_per_second, engine_decode: timings.predicted_per_second,
    client_prompt: P / prompt_s, client_decode: (D - 1) / ((last - first) / 1000),
    first_chunk_prompt: P / ((first - t0) / 1000),
  };
}

const server = await startServer(opt.model, ["-t", T, "--ctx", String(P + D + 8), "-q"]);
const warm = new http.Agent({ keepAlive: true });
await viaServer(server.base, warm);  // warm-up (first touch of the weights, page cache)
warm.destroy();
const B = { prompt: [], decode: [] }, S = { engine_prompt: [], engine_decode: [], client_prompt: [], client_decode: [], first_chunk_prompt: [] };
for (let r = 0; r < opt.rounds; r++) {
  // While lsb bench runs, the server sits idle; the two never compute at the same time.
  const b = bench();
  B.prompt.push(b.prompt);
  B.decode.push(b.decode);
  // Three pairs of requests, and the median of each reading, as lsb bench --reps 3 reports the
  // median of its three: the first request after the server sat idle runs cold (its prompt took 68 ms
  // against 45 ms for the next ones, bookworm-27m, 1 thread, on a quiet machine), just as
  // lsb bench's first repetition does.
  const runs = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  for (let k = 0; k < 3; k++) runs.push(await viaServer(server.base, agent));
  agent.destroy();
  const s = {};
  for (const key in S) {
    s[key] = median(runs.map((x) => x[key]));
    S[key].push(s[key]);
  }
  console.log(`round ${r + 1}: bench prompt ${b.prompt.toFixed(0)} decode ${b.decode.toFixed(1)} tok/s; server (engine) prompt ${s.engine_prompt.toFixed(0)} decode ${s.engine_decode.toFixed(1)}; (client) prompt ${s.client_prompt.toFixed(0)} decode ${s.client_decode.toFixed(1)}; first chunk ${s.first_chunk_prompt.toFixed(0)}`);
}
await server.stop();

const bp = median(B.prompt), bd = median(B.decode);
const row = (what, p, d) => console.log(`${what.padEnd(26)} prompt ${p.toFixed(0).padStart(6)} tok/s (${((p / bp) * 100).toFixed(1)} %)   decode ${d.toFixed(1).padStart(7)} tok/s (${((d / bd) * 100).toFixed(1)} %)`);
console.log(`\n${opt.model}, ${opt.threads} threads, prompt ${P} tokens, decode ${D} tokens; medians of ${opt.rounds} rounds (lsb bench --reps 3, then 3 prompt and 3 decode requests)`);
row("lsb bench", bp, bd);
row("lsb serve (engine timings)", median(S.engine_prompt), median(S.engine_decode));
row("lsb serve (client clock)", median(S.client_prompt), median(S.client_decode));
const fc = median(S.first_chunk_prompt);
console.log(`${"first chunk of a stream".padEnd(26)} prompt ${fc.toFixed(0).padStart(6)} tok/s (${((fc / bp) * 100).toFixed(1)} %)   (P / time to the decode request's first chunk; not judged)`);
const within = (x, ref) => Math.abs(x / ref - 1) <= 0.1;
check(within(median(S.client_prompt), bp), "prompt speed through the server (client clock) within 10 % of lsb bench");
check(within(median(S.client_decode), bd), "decode speed through the server (client clock) within 10 % of lsb bench");
process.exit(failed() ? 1 : 0);

// Shared by the scripts in bench/serve/: starting `lsb serve` (and `lsb run`) as a user does,
// reading the address from its --json line, stopping it, and small checks.
import { spawn, execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const LSB = process.env.LSB_EXE || path.join(ROOT, "build/lsb");
export const BOOKWORM = process.env.LSB_MODEL || path.join(ROOT, "../shared/models/bookworm-27m");

let failures = 0;
export function check(ok, what, detail = "") {
  console.log(`${ok ? "PASS" : "FAIL"}  ${what}${!ok && detail ? `\n      ${detail}` : ""}`);
  if (!ok) failures++;
  return ok;
}
export function failed() {
  return failures;
}

// `lsb run ... --json` with the same settings as a request: returns the continuation only (the
// text without the prompt).
export function lsbRun(model, prompt, { n, threads = 1, ctxArgs = [] } = {}) {
  const out = execFileSync(LSB, ["run", model, "-p", prompt, "-n", String(n), "--temp", "0", "-t", String(threads), "--json", ...ctxArgs], {
    encoding: "utf8",
  });
  const j = JSON.parse(out);
  if (!j.text.startsWith(prompt)) throw new Error(`lsb run: text does not start with the prompt: ${JSON.stringify(j.text)}`);
  return j.text.slice(prompt.length);
}

// Starts `lsb serve MODEL --port 0 --json ARGS...` (optionally wrapped, e.g. in /usr/bin/time -v)
// and resolves once it listens: { info, proc, stderr(), stop() }. stop() sends SIGTERM and
// resolves with the exit code and the whole stderr.
export function startServer(model, args = [], { wrap = [] } = {}) {
  const argv = [...wrap, LSB, "serve", model, "--port", "0", "--json", ...args];
  const proc = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let err = "", out = "";
  proc.stderr.on("data", (d) => (err += d));
  const exited = new Promise((res) => proc.on("exit", (code, sig) => res(code ?? 128 + (sig ? 15 : 0))));
  return new Promise((resolve, reject) => {
    proc.stdout.on("data", (d) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl < 0) return;
      const info = JSON.parse(out.slice(0, nl));
      resolve({
        info,
        proc,
        base: `http://127.0.0.1:${info.port}`,
        stderr: () => err,
        stop: async () => {
          // The server's own pid (under a wrapper, the wrapper's child) gets SIGTERM.
          process.kill(info.pid, "SIGTERM");
          const code = await exited;
          return { code, stderr: err };
        },
      });
    });
    exited.then((code) => reject(new Error(`lsb serve exited (${code}) before listening:\n${err}`)));
  });
}

// Peak RSS of a process that has ended, from GNU time -v's report ("Maximum resident set size
// (kbytes): N"), in MiB.
export function peakRssFromTime(stderr) {
  const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
  return m ? Number(m[1]) / 1024 : NaN;
}

export function readJson(p) {
  return JSON.parse(readFileSync(p, "utf8"));
}

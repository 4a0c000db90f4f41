// The chat page at / of `lsb serve`, driven in a real headless browser (Debian's chromium through
// puppeteer-core; issue 13, must-show 2): type a message, send it with Enter, watch the answer
// grow piece by piece as the events arrive, and compare the final text with the same greedy chat
// request made directly; then Stop in the middle of a long answer (completion mode), and a chat
// turn that carries the history. Every request the page makes is recorded: none may leave 127.0.0.1.
//   node bench/serve/browser_chat.mjs   (after `npm ci` in bench/serve; CHROMIUM=path overrides /usr/bin/chromium)
import puppeteer from "puppeteer-core";
import { BOOKWORM, check, failed, startServer } from "./lib.mjs";

const server = await startServer(BOOKWORM, ["--chat-template", "chatml", "-t", "1", "--ctx", "512"]);
console.log(`lsb serve on ${server.base}`);
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
});

async function direct(messages, maxTokens) {
  const r = await fetch(`${server.base}/v1/chat/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ messages, max_tokens: maxTokens, temperature: 0 }),
  });
  return (await r.json()).choices[0].message.content;
}

try {
  const page = await browser.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));

  // Every change of the newest answer's text, with its time, recorded in the page.
  await page.evaluateOnNewDocument(() => {
    window.__updates = [];
    new MutationObserver(() => {
      const all = document.querySelectorAll(".msg.assistant");
      const last = all[all.length - 1];
      if (!last) return;
      const text = last.firstChild && last.firstChild.nodeType === 3 ? last.firstChild.nodeValue : "";
      const u = window.__updates;
      if (!u.length || u[u.length - 1].text !== text) u.push({ t: performance.now(), text, done: last.classList.contains("done") });
    }).observe(document, { subtree: true, childList: true, characterData: true });
  });
  await page.goto(`${server.base}/`, { waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("info").textContent.includes("chat template"), { timeout: 10000 });
  const info = await page.$eval("#info", (e) => e.textContent);
  check(info.includes("bookworm-27m") && info.includes("chatml"), `the page shows the server: "${info}"`);

  // Greedy, 48 tokens.
  const setField = (sel, v) => page.$eval(sel, (e, v) => { e.value = v; e.dispatchEvent(new Event("change")); }, v);
  await setField("#temperature", "0");
  await setField("#maxTokens", "48");
  const question = "Tell me about the old library.";
  await page.click("#input");
  await page.keyboard.type(question, { delay: 5 });
  await page.keyboard.press("Enter");
  await page.waitForSelector(".msg.assistant.done", { timeout: 60000 });
  const shown = await page.$eval(".msg.assistant.done", (e) => e.firstChild.nodeValue);
  const meta = await page.$eval(".msg.assistant.done .meta", (e) => e.textContent);
  const updates = await page.evaluate(() => window.__updates);
  const growing = updates.filter((u) => u.text.length > 0 && u.text !== shown);
  const want = await direct([{ role: "user", content: question }], 48);
  console.log(`      answer: ${JSON.stringify(shown)}\n      meta: ${meta}`);
  check((await page.$eval(".msg.user", (e) => e.textContent)) === question, "the typed message is shown as the user's");
  check(shown === want, "the answer shown equals the same greedy request made directly", `page   ${JSON.stringify(shown)}\n      direct ${JSON.stringify(want)}`);
  // The server hands text out at most every 10 ms (Job::kWakeEvery): 48 tokens in ~200 ms come
  // in about a dozen pieces; 5 is the floor asked here.
  check(growing.length >= 5 && growing.every((u, i) => i === 0 || u.text.startsWith(growing[i - 1].text)),
    `the answer appeared in ${growing.length} growing pieces before the last, over ${
      growing.length ? (updates[updates.length - 1].t - growing[0].t).toFixed(0) : 0} ms`);
  check(/\d+ \+ \d+ tokens/.test(meta), "usage shown under the answer");

  // Stop during a long answer (completion mode: bookworm writes on and on from a novel's first
  // line, where its chat answers may be short): the page marks it stopped, the server cancels it.
  await page.select("#mode", "completion");
  await setField("#maxTokens", "400");
  await page.type("#input", "It is a truth universally acknowledged");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => {
    const all = document.querySelectorAll(".msg.assistant");
    return all.length === 2 && all[1].textContent.length > 20;
  }, { timeout: 30000 });
  await page.click("#stop");
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant.done").length === 2, { timeout: 10000 });
  const stoppedMeta = await page.$$eval(".msg.assistant.done", (e) => e[1].textContent);
  check(stoppedMeta.endsWith("stopped"), "Stop ends the answer in the page (marked 'stopped')", stoppedMeta.slice(-80));
  await new Promise((r) => setTimeout(r, 300));
  check(/POST \/v1\/completions -> 499 \(client gone\) streamed/.test(server.stderr()), "the server logged that generation as cancelled",
    server.stderr().split("\n").filter((l) => l.includes("POST")).join("\n      "));

  // A third turn: the page sends the whole conversation; the answer equals the direct request on it.
  await page.select("#mode", "chat");
  const history = await page.evaluate(() => history);
  await setField("#maxTokens", "16");
  await page.type("#input", "Thank you.");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant.done").length === 3, { timeout: 30000 });
  const third = await page.$$eval(".msg.assistant.done", (e) => e[2].firstChild.nodeValue);
  const want3 = await direct([...history, { role: "user", content: "Thank you." }], 16);
  check(history.length === 2 && third === want3, "a later turn carries the history (same answer as the direct request with it)",
    `history ${history.length} page ${JSON.stringify(third)} direct ${JSON.stringify(want3)}`);

  const foreign = requests.filter((u) => !u.startsWith(server.base));
  check(foreign.length === 0, `all ${requests.length} requests of the page went to the server itself`, foreign.join(" "));
  check(pageErrors.length === 0, "no script errors in the page", pageErrors.join("; "));
} finally {
  await browser.close();
  const { code } = await server.stop();
  check(code === 0, "lsb serve stops cleanly", `exit ${code}`);
}
process.exit(failed() ? 1 : 0);

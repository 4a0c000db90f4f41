// The official `openai` npm package against `lsb serve` on bookworm-27m (issue 13, must-show 1):
// a completion, a chat completion with --chat-template chatml, and both streamed; each greedy
// answer must equal what `lsb run` prints for the same prompt and settings. The chat prompt that
// `lsb run` gets is the ChatML rendering of the conversation (bookworm's vocabulary has no
// <|im_start|> piece, so the markers are text either way), and the answer ends at <|im_end|>.
//   node bench/serve/openai_client.mjs        (after `npm ci` in bench/serve; exit status 1 on a failure)
import OpenAI from "openai";
import { BOOKWORM, check, failed, lsbRun, startServer } from "./lib.mjs";

const N = 24;
const KEY = "sk-lsb-local-test";
const server = await startServer(BOOKWORM, ["--chat-template", "chatml", "--api-key", KEY, "-t", "1", "--ctx", "256", "-q"]);
console.log(`lsb serve listening on ${server.base}, model '${server.info.model}', template ${server.info.chat_template}`);
const client = new OpenAI({ baseURL: `${server.base}/v1`, apiKey: KEY, maxRetries: 0 });

try {
  const models = await client.models.list();
  check(models.data.length === 1 && models.data[0].id === server.info.model, "models.list() names the served model", JSON.stringify(models.data));

  // 1. A completion.
  const prompt = "It is a truth universally acknowledged";
  const want = lsbRun(BOOKWORM, prompt, { n: N });
  const c = await client.completions.create({ model: server.info.model, prompt, max_tokens: N, temperature: 0 });
  check(c.choices[0].text === want, "completions.create: greedy text equals lsb run", `server ${JSON.stringify(c.choices[0].text)}\n      run    ${JSON.stringify(want)}`);
  console.log(`      completion: ${JSON.stringify(prompt)} -> ${JSON.stringify(c.choices[0].text)}`);
  check(c.usage.completion_tokens === N && c.choices[0].finish_reason === "length", "completion usage and finish_reason", JSON.stringify(c.usage));

  // 2. The same completion streamed.
  let streamed = "", chunks = 0, usage = null;
  const cs = await client.completions.create({ model: server.info.model, prompt, max_tokens: N, temperature: 0, stream: true, stream_options: { include_usage: true } });
  for await (const ch of cs) {
    if (ch.choices.length) {
      streamed += ch.choices[0].text;
      chunks++;
    }
    if (ch.usage) usage = ch.usage;
  }
  check(streamed === want, `streamed completion (${chunks} chunks) equals lsb run`, `stream ${JSON.stringify(streamed)}`);
  check(chunks >= N / 2 && usage?.completion_tokens === N, "the stream came token by token, usage at the end", `chunks ${chunks} usage ${JSON.stringify(usage)}`);

  // 3. A chat completion with --chat-template chatml.
  const messages = [
    { role: "system", content: "You are a librarian." },
    { role: "user", content: "What is a novel?" },
  ];
  const rendered = messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join("") + "<|im_start|>assistant\n";
  const runChat = lsbRun(BOOKWORM, rendered, { n: N });
  const wantChat = runChat.includes("<|im_end|>") ? runChat.slice(0, runChat.indexOf("<|im_end|>")) : runChat;
  const m = await client.chat.completions.create({ model: server.info.model, messages, max_tokens: N, temperature: 0 });
  check(m.choices[0].message.role === "assistant" && m.choices[0].message.content === wantChat,
    "chat.completions.create (chatml): greedy answer equals lsb run on the rendered prompt",
    `server ${JSON.stringify(m.choices[0].message.content)}\n      run    ${JSON.stringify(wantChat)}`);

  console.log(`      chat answer (${m.choices[0].finish_reason}): ${JSON.stringify(m.choices[0].message.content)}`);

  // 4. The chat completion streamed.
  let chat = "", role = null, finish = null;
  const ms = await client.chat.completions.create({ model: server.info.model, messages, max_tokens: N, temperature: 0, stream: true });
  for await (const ch of ms) {
    const d = ch.choices[0]?.delta ?? {};
    if (d.role) role = d.role;
    if (d.content) chat += d.content;
    if (ch.choices[0]?.finish_reason) finish = ch.choices[0].finish_reason;
  }
  check(chat === wantChat && role === "assistant" && finish === m.choices[0].finish_reason, "streamed chat completion equals lsb run", `stream ${JSON.stringify(chat)} finish ${finish}`);

  // 5. The client's own error types for the server's errors.
  try {
    await client.completions.create({ model: "gpt-4", prompt: "x", max_tokens: 1 });
    check(false, "unknown model refused");
  } catch (e) {
    check(e instanceof OpenAI.NotFoundError && e.code === "model_not_found", "unknown model: openai.NotFoundError, code model_not_found", String(e));
  }
  try {
    await new OpenAI({ baseURL: `${server.base}/v1`, apiKey: "sk-wrong", maxRetries: 0 }).models.list();
    check(false, "wrong key refused");
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError, "wrong API key: openai.AuthenticationError (401)", String(e));
  }
  try {
    await client.completions.create({ model: server.info.model, prompt: "x", max_tokens: 100000 });
    check(false, "max_tokens beyond the context refused");
  } catch (e) {
    check(e instanceof OpenAI.BadRequestError && e.code === "context_length_exceeded", "max_tokens beyond the context: openai.BadRequestError", String(e));
  }
} finally {
  const { code } = await server.stop();
  check(code === 0, "lsb serve stops cleanly on SIGTERM", `exit ${code}`);
}
process.exit(failed() ? 1 : 0);

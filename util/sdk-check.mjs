import OpenAI from "openai";
// the gateway's base URL is all an OpenAI client needs to change
const client = new OpenAI({ baseURL: process.env.HELIX_URL, apiKey: process.env.HELIX_API_KEY || "none" });
for (const model of ["gpt-4o", "claude-3-5-sonnet-20241022", "gemini-1.5-pro"]) {
  const r = await client.chat.completions.create({ model, messages: [{ role: "system", content: "be brief" }, { role: "user", content: "Hello from the SDK" }], max_tokens: 12 });
  console.log(model, "->", r.choices[0].message.content, "|", r.choices[0].finish_reason, JSON.stringify(r.usage));
}
for (const model of ["text-embedding-3-small", "text-embedding-004"]) {
  const e = await client.embeddings.create({ model, input: ["one", "two"] });
  console.log(model, "->", e.data.length, "vectors of", e.data[0].embedding.length, JSON.stringify(e.usage));
}
const models = await client.models.list();
console.log("models:", models.data.map(m => m.id + "@" + m.owned_by).join(", "));
try {
  await client.chat.completions.create({ model: "nope", messages: [{ role: "user", content: "x" }] });
  throw new Error("an unknown model was accepted");
} catch (err) {
  if (err.status !== 404) throw err;
  console.log("unknown model ->", err.status, err.code);
}
// streams: chunks iterated as they come, from each provider type
for (const model of ["gpt-4o", "claude-3-5-sonnet-20241022", "gemini-1.5-pro"]) {
  const s = await client.chat.completions.create({ model, messages: [{ role: "user", content: "Hello from the SDK" }], max_tokens: 12, stream: true, stream_options: { include_usage: true } });
  let text = "", finish = null, usage = null, n = 0;
  for await (const c of s) {
    n++;
    if (c.choices.length) { text += c.choices[0].delta.content || ""; finish = c.choices[0].finish_reason || finish; }
    if (c.usage) usage = c.usage;
  }
  if (!text || !finish || !usage) throw new Error(model + ": incomplete stream");
  console.log(model, "stream ->", n, "chunks:", text, "|", finish, JSON.stringify(usage));
}

import Anthropic from "@anthropic-ai/sdk";
// the official Anthropic SDK against the gateway's POST /v1/messages: only
// the base URL changes; every provider type behind it
const client = new Anthropic({ baseURL: process.env.HELIX_BASE, apiKey: process.env.HELIX_API_KEY || "none", maxRetries: 0 });
const models = (process.env.HELIX_MODELS || "gpt-4o claude-3-5-sonnet-20241022 gemini-1.5-pro").split(" ");
const tools = [{ name: "get_weather", description: "the weather in a city", input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }];
const check = (ok, what) => { if (!ok) throw new Error(what); };
for (const model of models) {
  const r = await client.messages.create({ model, max_tokens: 12, system: "be brief", messages: [{ role: "user", content: "Hello from the SDK" }] });
  check(r.type === "message" && r.content[0].type === "text" && r.stop_reason && r.usage.output_tokens > 0, model + ": bad answer");
  console.log(model, "->", r.content[0].text, "|", r.stop_reason, JSON.stringify(r.usage));

  const t = await client.messages.create({ model, max_tokens: 100, tools, messages: [{ role: "user", content: "what is the weather in Paris" }] });
  const use = t.content.find(b => b.type === "tool_use");
  check(use && use.id && typeof use.input === "object" && t.stop_reason === "tool_use", model + ": no tool_use");
  const t2 = await client.messages.create({ model, max_tokens: 20, tools, messages: [
    { role: "user", content: "what is the weather in Paris" },
    { role: "assistant", content: t.content },
    { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "sunny" }] }] });
  check(t2.content[0].type === "text", model + ": no answer to the tool result");
  console.log(model, "tools ->", use.name, JSON.stringify(use.input), "then", t2.content[0].text.slice(0, 40));

  const s = client.messages.stream({ model, max_tokens: 12, messages: [{ role: "user", content: "Hello from the SDK" }] });
  let text = "";
  s.on("text", d => { text += d; });
  const f = await s.finalMessage();
  check(text && f.content[0].text === text && f.stop_reason && f.usage.output_tokens > 0, model + ": incomplete stream");
  console.log(model, "stream ->", text, "|", f.stop_reason, JSON.stringify(f.usage));

  const ts = client.messages.stream({ model, max_tokens: 100, tools, messages: [{ role: "user", content: "what is the weather in Paris" }] });
  const tf = await ts.finalMessage();
  const su = tf.content.find(b => b.type === "tool_use");
  check(su && su.id && typeof su.input === "object" && tf.stop_reason === "tool_use", model + ": no streamed tool_use");
  console.log(model, "stream tools ->", su.name, JSON.stringify(su.input));
}
try {
  await client.messages.create({ model: "nope", max_tokens: 5, messages: [{ role: "user", content: "x" }] });
  throw new Error("an unknown model was accepted");
} catch (err) {
  if (!(err instanceof Anthropic.NotFoundError)) throw err;
  console.log("unknown model ->", err.status, err.error.error.type);
}
const n = await client.messages.countTokens({ model: models[0], messages: [{ role: "user", content: "Hello from the SDK" }] });
check(n.input_tokens > 0, "count_tokens");
console.log("count_tokens ->", n.input_tokens);
console.log("anthropic sdk: ok");

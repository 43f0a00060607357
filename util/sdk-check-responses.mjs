import OpenAI from "openai";
// the official OpenAI SDK's Responses API against the gateway's POST
// /v1/responses: only the base URL changes; every provider type behind it
const client = new OpenAI({ baseURL: process.env.HELIX_URL, apiKey: process.env.HELIX_API_KEY || "none", maxRetries: 0 });
const models = (process.env.HELIX_MODELS || "gpt-4o claude-3-5-sonnet-20241022 gemini-1.5-pro").split(" ");
const tools = [{ type: "function", name: "get_weather", description: "the weather in a city", strict: false, parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }];
const check = (ok, what) => { if (!ok) throw new Error(what); };
for (const model of models) {
  const r = await client.responses.create({ model, instructions: "be brief", input: "Hello from the SDK", max_output_tokens: 12 });
  check(r.object === "response" && r.id.startsWith("resp_") && r.output_text && r.usage.output_tokens > 0, model + ": bad answer");
  check(r.status === "incomplete" && r.incomplete_details.reason === "max_output_tokens", model + ": not incomplete at max_output_tokens");
  console.log(model, "->", r.output_text, "|", r.status, JSON.stringify(r.usage));

  const t = await client.responses.create({ model, tools, input: "what is the weather in Paris" });
  const fc = t.output.find(o => o.type === "function_call");
  check(fc && fc.call_id && typeof JSON.parse(fc.arguments) === "object" && t.status === "completed", model + ": no function_call");
  const t2 = await client.responses.create({ model, tools, input: [
    { role: "user", content: "what is the weather in Paris" }, fc,
    { type: "function_call_output", call_id: fc.call_id, output: "sunny" }] });
  check(t2.output_text, model + ": no answer to the function_call_output");
  console.log(model, "tools ->", fc.name, fc.arguments, "then", t2.output_text.slice(0, 40));

  const s = await client.responses.create({ model, input: "Hello from the SDK", stream: true });
  let text = "", last = null, seq = -1;
  for await (const e of s) {
    check(e.sequence_number === seq + 1, model + ": sequence_number " + e.sequence_number + " after " + seq);
    seq = e.sequence_number;
    if (e.type === "response.output_text.delta") text += e.delta;
    last = e;
  }
  check(text && last.type === "response.completed" && last.response.output[0].content[0].text === text && last.response.usage.output_tokens > 0, model + ": incomplete stream");
  console.log(model, "stream ->", seq + 1, "events:", text);

  const ts = client.responses.stream({ model, tools, input: "what is the weather in Paris" });
  const tf = await ts.finalResponse();
  const sc = tf.output.find(o => o.type === "function_call");
  check(sc && sc.call_id && typeof JSON.parse(sc.arguments) === "object" && tf.status === "completed", model + ": no streamed function_call");
  console.log(model, "stream tools ->", sc.name, sc.arguments);
}
try {
  await client.responses.create({ model: "nope", input: "x" });
  throw new Error("an unknown model was accepted");
} catch (err) {
  if (!(err instanceof OpenAI.NotFoundError)) throw err;
  console.log("unknown model ->", err.status, err.code);
}
try {
  await client.responses.create({ model: models[0], input: "x", store: true });
  throw new Error("store: true was accepted");
} catch (err) {
  if (!(err instanceof OpenAI.BadRequestError)) throw err;
  console.log("store ->", err.status, err.message);
}
console.log("responses sdk: ok");

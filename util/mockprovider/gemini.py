"""Gemini wire format: generateContent and streamGenerateContent (functionCall
and functionResponse parts, inlineData and fileData), countTokens, embeddings,
models."""

import re
from urllib.parse import parse_qs

from .answers import (TOOL_TOKENS, Conversation, call_text, choose_tool, gen_pieces,
                      image_inline, limit, prompt_tokens, result_text)
from .app import ProviderApp
from .core import (DEFAULT_EMBED_DIMS, EMBED_DIMS, ID_PH, MARK, BadRequest, embed_vector,
                   is_int, jcanon, jdump, json_reply, str_list, template)

STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
          500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}
PATH = re.compile(r"^/(v1beta|v1)/models/([^/:]+)(?::([A-Za-z]+))?$")


def get2(d, camel, snake):
    v = d.get(camel)
    return d.get(snake) if v is None else v


def gemini_text(content):
    """Text of a Gemini Content object ({"parts":[{"text":..}]}) or a bare string."""
    if isinstance(content, str):
        return content
    if not isinstance(content, dict):
        return ""
    parts = content.get("parts")
    if isinstance(parts, dict):
        parts = [parts]
    if not isinstance(parts, list):
        return ""
    return "\n".join(p["text"] for p in parts
                     if isinstance(p, dict) and isinstance(p.get("text"), str))


def response_text(resp):
    """A functionResponse's response: {"content": text} is the text itself."""
    if isinstance(resp, dict) and len(resp) == 1 and isinstance(resp.get("content"), str):
        return resp["content"]
    return resp if isinstance(resp, str) else jcanon(resp)


def parts_text(content, results):
    """Text of a message's parts in order (text, images, calls); functionResponse
    parts go to results as tool lines."""
    parts = content.get("parts")
    if isinstance(parts, dict):
        parts = [parts]
    if not isinstance(parts, list):
        return ""
    out, calls = [], []
    for p in parts:
        if not isinstance(p, dict):
            continue
        if isinstance(p.get("text"), str):
            out.append(p["text"])
            continue
        inline = get2(p, "inlineData", "inline_data")
        fdata = get2(p, "fileData", "file_data")
        fc = get2(p, "functionCall", "function_call")
        fr = get2(p, "functionResponse", "function_response")
        if isinstance(inline, dict):
            out.append(image_inline(get2(inline, "mimeType", "mime_type"), inline.get("data")))
        elif isinstance(fdata, dict):
            uri = get2(fdata, "fileUri", "file_uri")
            if not isinstance(uri, str) or not uri:
                raise BadRequest("* fileData.fileUri: file uri is not specified")
            out.append("[image %s]" % uri)
        elif isinstance(fc, dict):
            if not isinstance(fc.get("name"), str):
                raise BadRequest("* functionCall.name: name is not specified")
            calls.append(call_text(fc["name"], fc.get("args", {})))
        elif isinstance(fr, dict):
            if not isinstance(fr.get("name"), str):
                raise BadRequest("* functionResponse.name: name is not specified")
            results.append(result_text(fr["name"], response_text(fr.get("response"))))
    text = "\n".join(out)
    if calls:
        text = "\n".join(([text] if text else []) + calls)
    return text


def conversation(data):
    contents = data.get("contents")
    if isinstance(contents, dict):
        contents = [contents]
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    conv = Conversation()
    st = gemini_text(data.get("systemInstruction") or data.get("system_instruction"))
    if st:
        conv.system.append(st)
    for c in contents:
        if not isinstance(c, dict):
            raise BadRequest("* GenerateContentRequest.contents: invalid content")
        role = c.get("role") or "user"
        results = []
        text = parts_text(c, results)
        conv.msgs.extend(("tool", r) for r in results)
        if text or not results:
            conv.msgs.append(("assistant" if role == "model" else role, text))
    return conv


def tools_of(tools, allowed):
    out = []
    for t in tools if isinstance(tools, list) else []:
        decls = isinstance(t, dict) and get2(t, "functionDeclarations",
                                              "function_declarations")
        for d in decls if isinstance(decls, list) else []:
            if not isinstance(d, dict):
                continue
            name = d.get("name") or "tool"
            if allowed and name not in allowed:
                continue
            schema = d.get("parameters")
            if schema is None:
                schema = get2(d, "parametersJsonSchema", "parameters_json_schema")
            out.append((name, schema))
    return out


def tool_config(data):
    """(forced, allowed names) from toolConfig.functionCallingConfig."""
    tcfg = get2(data, "toolConfig", "tool_config")
    fcc = (get2(tcfg, "functionCallingConfig", "function_calling_config")
           if isinstance(tcfg, dict) else None)
    if not isinstance(fcc, dict):
        return None, None
    mode = fcc.get("mode")
    allowed = get2(fcc, "allowedFunctionNames", "allowed_function_names")
    allowed = [a for a in allowed if isinstance(a, str)] if isinstance(allowed, list) else None
    if mode == "NONE":
        return "none", None
    if mode == "ANY":
        return (allowed[0] if allowed and len(allowed) == 1 else "any"), allowed
    return None, None


class GeminiApp(ProviderApp):
    kind = "gemini"

    def route_table(self):
        return {("GET", "/v1beta/models"): self.models_list,
                ("GET", "/v1/models"): self.models_list}

    def route_more(self, req):
        m = PATH.match(req.path)
        if m:
            model, action = m.group(2), m.group(3)
            if action is None and req.method == "GET":
                return self.model_get, model
            h = {"generateContent": self.generate,
                 "streamGenerateContent": self.generate,
                 "countTokens": self.count,
                 "embedContent": self.embed,
                 "batchEmbedContents": self.embed}.get(action)
            if h is not None and req.method == "POST":
                return h, (model, action)
        return None, None

    @staticmethod
    def error_obj(status, message, etype=None, code=None):
        st = STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message, "status": st}}

    def json_error(self, e):
        return "Invalid JSON payload received. %s" % e

    def not_found(self, req):
        return self.error(404, "The requested URL %s was not found on this server."
                          % req.path)

    def model_404(self, model, what="generateContent"):
        return self.error(404, "models/%s is not found for API version v1beta, or is not "
                          "supported for %s." % (model, what))

    def auth(self, req):
        h = req.headers
        key = h.get("x-goog-api-key")
        if not key and "key=" in req.query:
            key = (parse_qs(req.query).get("key") or [""])[0]
        if not key:
            return self.error(403, "Method doesn't allow unregistered callers (callers "
                              "without established identity). Please use API Key or "
                              "other form of API consumer identity to call this API.")
        return None

    def generate(self, req, data, arg):
        model, action = arg
        if not self.valid_model(model):
            return self.model_404(model, action)
        conv = conversation(data)
        gc = data.get("generationConfig") or data.get("generation_config") or {}
        if not isinstance(gc, dict):
            raise BadRequest("generationConfig must be an object")
        max_t = gc.get("maxOutputTokens", gc.get("max_output_tokens"))
        max_t = max_t if is_int(max_t) and max_t > 0 else None
        stops = str_list(gc.get("stopSequences", gc.get("stop_sequences")), "stopSequences")
        cc = gc.get("candidateCount", gc.get("candidate_count")) or 1
        if not is_int(cc) or not 1 <= cc <= 8:
            raise BadRequest("candidateCount must be between 1 and 8")
        canon, last = conv.canonical(), conv.last_user()
        ptok = prompt_tokens(canon)
        forced, allowed = tool_config(data)
        call = choose_tool(conv, tools_of(data.get("tools"), allowed), forced)
        tool = call[0] if call else None
        results = [limit(gen_pieces(canon, last, i + self.dissent(last)), max_t, stops)
                   for i in range(cc)]
        ctok = sum(TOOL_TOKENS if tool else len(r[0]) for r in results)
        usage = {"promptTokenCount": ptok, "candidatesTokenCount": ctok,
                 "totalTokenCount": ptok + ctok}

        def fr(r):
            return "MAX_TOKENS" if r[1] == "length" and not tool else "STOP"

        def cand(i, parts, finish=None):
            c = {"content": {"role": "model", "parts": parts}}
            if finish:
                c["finishReason"] = finish
            c["index"] = i
            return c

        tool_part = {"functionCall": {"name": tool, "args": call[1] if call else None}}
        if action != "streamGenerateContent":
            return json_reply(200, {
                "candidates": [cand(i, [tool_part] if tool else [{"text": "".join(r[0])}],
                                    fr(r)) for i, r in enumerate(results)],
                "usageMetadata": usage, "modelVersion": model, "responseId": ID_PH})

        # ---- streaming: one chunk per piece, finishReason (+usage on the last) at the end
        chunks = []
        for i, r in enumerate(results):
            pieces = [] if tool else r[0]
            if pieces[:-1]:
                pre, post = template({"candidates": [cand(i, [{"text": MARK}])],
                                      "modelVersion": model, "responseId": ID_PH})
                chunks.extend(pre + jdump(p) + post for p in pieces[:-1])
            final = {"candidates": [cand(i, [tool_part] if tool else
                                         [{"text": pieces[-1] if pieces else ""}], fr(r))],
                     "modelVersion": model, "responseId": ID_PH}
            if i == len(results) - 1:
                final["usageMetadata"] = usage
            chunks.append(jdump(final))
        err = jdump(self.error_obj(500, "mock_provider injected stream error"))
        if "alt=sse" in req.query:
            frames = [b"data: " + c + b"\r\n\r\n" for c in chunks]
            e = b"data: " + err + b"\r\n\r\n"
            return self.sse_reply(frames, sep=b"\r\n\r\n", err=(e, e))
        # JSON array form, streamed element by element
        frames = [b"[" + chunks[0]] + [b",\r\n" + c for c in chunks[1:]] + [b"]"]
        return self.sse_reply(frames, ctype="application/json", sep=b"",
                              err=(b"[" + err + b"]", b",\r\n" + err + b"]"))

    def count(self, req, data, arg):
        model, action = arg
        if not self.valid_model(model):
            return self.model_404(model, action)
        if isinstance(data.get("generateContentRequest"), dict):
            data = data["generateContentRequest"]
        return json_reply(200, {"totalTokens": prompt_tokens(conversation(data).canonical())})

    def embed(self, req, data, arg):
        model, action = arg
        if not self.valid_model(model):
            return self.model_404(model, action)

        def one(r):
            if not isinstance(r, dict) or not isinstance(r.get("content"), (dict, str)):
                raise BadRequest("* EmbedContentRequest.content: content is not specified")
            dims = r.get("outputDimensionality", r.get("output_dimensionality"))
            if dims is None:
                dims = EMBED_DIMS.get(model, DEFAULT_EMBED_DIMS["gemini"])
            elif not is_int(dims) or not 1 <= dims <= 8192:
                raise BadRequest("outputDimensionality must be between 1 and 8192")
            return {"values": embed_vector(gemini_text(r["content"]), dims)}

        if action == "embedContent":
            return json_reply(200, {"embedding": one(data)})
        reqs = data.get("requests")
        if not isinstance(reqs, list) or not reqs:
            raise BadRequest("* BatchEmbedContentsRequest.requests: requests is not specified")
        return json_reply(200, {"embeddings": [one(r) for r in reqs]})

    def model_obj(self, m):
        emb = "embedding" in m
        return {"name": "models/" + m, "version": "001", "displayName": m,
                "description": "mock_provider model",
                "inputTokenLimit": 2048 if emb else 1048576,
                "outputTokenLimit": 1 if emb else 8192,
                "supportedGenerationMethods": ["embedContent"] if emb else
                ["generateContent", "countTokens"]}

    def models_list(self, req, data, _):
        return json_reply(200, {"models": [self.model_obj(m) for m in self.models]})

    def model_get(self, req, data, model):
        if not self.valid_model(model):
            return self.model_404(model, "get")
        return json_reply(200, self.model_obj(model))


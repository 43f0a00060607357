"""OpenAI wire format: chat completions (tools, images), completions,
embeddings, models."""

import base64
import json
import struct

from .answers import (TOOL_TOKENS, Conversation, arg_pieces, args_json, call_text,
                      choose_tool, gen_pieces, image_url, limit, prompt_tokens,
                      result_text)
from .app import ProviderApp
from .core import (CREATED_PH, DEFAULT_EMBED_DIMS, EMBED_DIMS, ID_PH, MARK, BadRequest,
                   embed_vector, is_int, jdump, json_reply, opt_max_tokens,
                   str_list, template)


def content_text(content):
    """Text of a message's content: a string or text and image parts, in order."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for b in content:
            if isinstance(b, str):
                out.append(b)
            elif isinstance(b, dict):
                t = b.get("type")
                if (t in (None, "text", "input_text", "output_text")
                        and isinstance(b.get("text"), str)):
                    out.append(b["text"])
                elif t in ("image_url", "input_image"):
                    u = b.get("image_url")
                    out.append(image_url(u.get("url") if isinstance(u, dict) else u))
        return "\n".join(out)
    return ""


def arguments(fn):
    """A call's arguments string as the conversation's text: parsed when JSON."""
    a = fn.get("arguments") if isinstance(fn, dict) else None
    if not isinstance(a, str):
        return {} if a is None else a
    try:
        return json.loads(a)
    except ValueError:
        return a


def conversation(messages):
    conv, names = Conversation(), {}
    for m in messages:
        if not isinstance(m, dict):
            raise BadRequest("each message must be an object")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool", "function"):
            raise BadRequest("Invalid value for 'messages.role': %r" % (role,))
        text = content_text(m.get("content"))
        if role in ("system", "developer"):
            conv.system.append(text)
        elif role == "assistant":
            calls = []
            tcs = m.get("tool_calls")
            for c in tcs if isinstance(tcs, list) else []:
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadRequest("messages: a tool call needs function.name")
                if isinstance(c.get("id"), str):
                    names[c["id"]] = fn["name"]
                calls.append(call_text(fn["name"], arguments(fn)))
            fc = m.get("function_call")
            if isinstance(fc, dict) and isinstance(fc.get("name"), str):
                calls.append(call_text(fc["name"], arguments(fc)))
            if calls:
                text = "\n".join(([text] if text else []) + calls)
            conv.msgs.append(("assistant", text))
        elif role == "tool":
            name = names.get(m.get("tool_call_id")) or m.get("name")
            conv.msgs.append(("tool", result_text(name, text)))
        elif role == "function":
            conv.msgs.append(("tool", result_text(m.get("name"), text)))
        else:
            conv.msgs.append((role, text))
    return conv


def tools_of(tools):
    """Declared function tools as [(name, parameters schema)]."""
    out = []
    for t in tools if isinstance(tools, list) else []:
        fn = t.get("function") if isinstance(t, dict) else None
        fn = fn if isinstance(fn, dict) else {}
        out.append((fn.get("name") or "tool", fn.get("parameters")))
    return out


def forced_of(tc):
    if tc == "none":
        return "none"
    if tc == "required":
        return "any"
    if isinstance(tc, dict) and isinstance(tc.get("function"), dict):
        return tc["function"].get("name") or None
    return None


class OpenAIApp(ProviderApp):
    kind = "openai"

    def route_table(self):
        return {("POST", "/v1/chat/completions"): self.chat,
                ("POST", "/v1/completions"): self.completions,
                ("POST", "/v1/embeddings"): self.embeddings,
                ("GET", "/v1/models"): self.models_list}

    def route_more(self, req):
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            return self.model_get, req.path[len("/v1/models/"):]
        return None, None

    @staticmethod
    def error_obj(status, message, etype=None, code=None):
        if etype is None:
            etype = ("server_error" if status >= 500 else
                     "requests" if status == 429 else "invalid_request_error")
        if code is None and status == 429:
            code = "rate_limit_exceeded"
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}

    def json_error(self, e):
        return ("We could not parse the JSON body of your request. (HINT: This likely "
                "means you aren't using your HTTP library correctly.) (%s)" % e)

    def not_found(self, req):
        return self.error(404, "Invalid URL (%s %s)" % (req.method, req.path))

    def model_404(self, model, what=None):
        return self.error(404, "The model `%s` does not exist or you do not have access "
                          "to it." % model, code="model_not_found")

    def check_model(self, data):
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter")
        if not self.valid_model(model):
            return model, self.model_404(model)
        return model, None

    def chat(self, req, data, _):
        model, err = self.check_model(data)
        if err:
            return err
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' is a required property and must be a non-empty array")
        conv = conversation(messages)
        max_t = opt_max_tokens(data.get("max_completion_tokens"), "max_completion_tokens")
        if max_t is None:
            max_t = opt_max_tokens(data.get("max_tokens"), "max_tokens")
        stops = str_list(data.get("stop"), "stop")
        n = data.get("n", 1)
        if n is None:
            n = 1
        if not is_int(n) or not 1 <= n <= 128:
            raise BadRequest("n must be an integer between 1 and 128")
        canon, last = conv.canonical(), conv.last_user()
        ptok = prompt_tokens(canon)
        call = choose_tool(conv, tools_of(data.get("tools")),
                           forced_of(data.get("tool_choice")))
        tool = call[0] if call else None
        args = args_json(call[1]) if call else None
        results = [limit(gen_pieces(canon, last, i + self.dissent(last)), max_t, stops)
                   for i in range(n)]
        ctok = sum(TOOL_TOKENS if tool else len(r[0]) for r in results)
        usage = {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok}
        finish = "tool_calls" if tool else None

        def fr(r):
            return finish or ("length" if r[1] == "length" else "stop")

        def tool_call(i):
            return {"id": "call_%s%d" % (ID_PH, i), "type": "function",
                    "function": {"name": tool, "arguments": args}}

        if not data.get("stream"):
            choices = []
            for i, r in enumerate(results):
                msg = {"role": "assistant", "content": None if tool else "".join(r[0]),
                       "refusal": None}
                if tool:
                    msg["tool_calls"] = [tool_call(i)]
                choices.append({"index": i, "message": msg, "logprobs": None,
                                "finish_reason": fr(r)})
            return json_reply(200, {
                "id": "chatcmpl-" + ID_PH, "object": "chat.completion", "created": CREATED_PH,
                "model": model, "choices": choices, "usage": usage,
                "system_fingerprint": "fp_mock"})

        # ---- streaming: chat.completion.chunk frames
        so = data.get("stream_options")
        inc_usage = isinstance(so, dict) and bool(so.get("include_usage"))

        def chunk(i, delta, finish_reason, choices=None):
            o = {"id": "chatcmpl-" + ID_PH, "object": "chat.completion.chunk",
                 "created": CREATED_PH, "model": model, "system_fingerprint": "fp_mock",
                 "choices": choices if choices is not None else
                 [{"index": i, "delta": delta, "logprobs": None,
                   "finish_reason": finish_reason}]}
            if inc_usage:
                o["usage"] = None
            return o

        frames = []
        for i, r in enumerate(results):
            if tool:
                tc0 = dict({"index": 0}, **tool_call(i))
                tc0["function"] = {"name": tool, "arguments": ""}
                first = {"role": "assistant", "content": None, "tool_calls": [tc0]}
                pre, post = template(chunk(i, {"tool_calls": [
                    {"index": 0, "function": {"arguments": MARK}}]}, None))
                pieces = arg_pieces(args)
            else:
                first = {"role": "assistant", "content": "", "refusal": None}
                pre, post = template(chunk(i, {"content": MARK}, None))
                pieces = r[0]
            frames.append(b"data: " + jdump(chunk(i, first, None)) + b"\n\n")
            frames.extend(b"data: " + pre + jdump(p) + post + b"\n\n" for p in pieces)
            frames.append(b"data: " + jdump(chunk(i, {}, fr(r))) + b"\n\n")
        if inc_usage:
            last_chunk = chunk(0, None, None, choices=[])
            last_chunk["usage"] = usage
            frames.append(b"data: " + jdump(last_chunk) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        return self.sse_reply(frames)

    def completions(self, req, data, _):
        model, err = self.check_model(data)
        if err:
            return err
        prompt = data.get("prompt", "")
        if isinstance(prompt, str):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(is_int(x) for x in prompt):
            prompts = [" ".join(map(str, prompt))]
        elif isinstance(prompt, list) and prompt:
            prompts = [p if isinstance(p, str) else " ".join(map(str, p))
                       if isinstance(p, list) else str(p) for p in prompt]
        else:
            raise BadRequest("prompt must be a string or an array")
        max_t = opt_max_tokens(data.get("max_tokens"), "max_tokens")
        stops = str_list(data.get("stop"), "stop")
        n = data.get("n", 1) or 1
        if not is_int(n) or not 1 <= n <= 128:
            raise BadRequest("n must be an integer between 1 and 128")
        results, ptok = [], 0
        for p in prompts:
            canon = "user:" + p
            ptok += prompt_tokens(canon)
            results.extend(limit(gen_pieces(canon, p, j), max_t, stops) for j in range(n))
        ctok = sum(len(r[0]) for r in results)
        usage = {"prompt_tokens": ptok, "completion_tokens": ctok, "total_tokens": ptok + ctok}
        head = {"id": "cmpl-" + ID_PH, "object": "text_completion", "created": CREATED_PH,
                "model": model}

        def fr(r):
            return "length" if r[1] == "length" else "stop"

        if not data.get("stream"):
            return json_reply(200, dict(head, choices=[
                {"text": "".join(r[0]), "index": i, "logprobs": None, "finish_reason": fr(r)}
                for i, r in enumerate(results)], usage=usage))
        so = data.get("stream_options")
        inc_usage = isinstance(so, dict) and bool(so.get("include_usage"))
        frames = []
        for i, r in enumerate(results):
            pre, post = template(dict(head, choices=[
                {"text": MARK, "index": i, "logprobs": None, "finish_reason": None}]))
            frames.extend(b"data: " + pre + jdump(p) + post + b"\n\n" for p in r[0])
            frames.append(b"data: " + jdump(dict(head, choices=[
                {"text": "", "index": i, "logprobs": None, "finish_reason": fr(r)}])) + b"\n\n")
        if inc_usage:
            frames.append(b"data: " + jdump(dict(head, choices=[], usage=usage)) + b"\n\n")
        frames.append(b"data: [DONE]\n\n")
        return self.sse_reply(frames)

    def embeddings(self, req, data, _):
        model, err = self.check_model(data)
        if err:
            return err
        inp = data.get("input")
        if isinstance(inp, str):
            texts = [inp]
        elif isinstance(inp, list) and inp and all(is_int(x) for x in inp):
            texts = [" ".join(map(str, inp))]
        elif isinstance(inp, list) and inp:
            texts = []
            for x in inp:
                if isinstance(x, str):
                    texts.append(x)
                elif isinstance(x, list):
                    texts.append(" ".join(map(str, x)))
                else:
                    raise BadRequest("'input' items must be strings or token arrays")
        else:
            raise BadRequest("'input' is a required property (string or non-empty array)")
        dims = data.get("dimensions")
        if dims is None:
            dims = EMBED_DIMS.get(model, DEFAULT_EMBED_DIMS["openai"])
        elif not is_int(dims) or not 1 <= dims <= 8192:
            raise BadRequest("dimensions must be an integer between 1 and 8192")
        fmt = data.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise BadRequest("encoding_format must be 'float' or 'base64'")
        out, ptok = [], 0
        for i, t in enumerate(texts):
            vec = embed_vector(t, dims)
            if fmt == "base64":
                vec = base64.b64encode(struct.pack("<%df" % dims, *vec)).decode()
            out.append({"object": "embedding", "index": i, "embedding": vec})
            ptok += prompt_tokens(t)
        return json_reply(200, {"object": "list", "data": out, "model": model,
                                "usage": {"prompt_tokens": ptok, "total_tokens": ptok}})

    def models_list(self, req, data, _):
        return json_reply(200, {"object": "list", "data": [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
            for m in self.models]})

    def model_get(self, req, data, model):
        if not self.valid_model(model):
            return self.model_404(model)
        return json_reply(200, {"id": model, "object": "model", "created": 1700000000,
                                "owned_by": "mock"})

"""Anthropic wire format: messages (tool_use blocks, input_json_delta, images),
count_tokens, models."""

from .answers import (TOOL_TOKENS, Conversation, arg_pieces, args_json, call_text,
                      choose_tool, gen_pieces, image_inline, image_url, limit,
                      prompt_tokens, result_text)
from .app import ProviderApp
from .core import (ID_PH, MARK, BadRequest, jdump, json_reply, opt_max_tokens, str_list,
                   template)

ERR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
             403: "permission_error", 404: "not_found_error", 413: "request_too_large",
             429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def image_block(b):
    src = b.get("source")
    st = src.get("type") if isinstance(src, dict) else None
    if st == "base64":
        if src.get("media_type") not in IMAGE_TYPES:
            raise BadRequest("messages: image source media_type must be one of %s"
                             % ", ".join(IMAGE_TYPES))
        return image_inline(src["media_type"], src.get("data"))
    if st == "url":
        return image_url(src.get("url"))
    if st == "file" and isinstance(src.get("file_id"), str):
        return "[image file:%s]" % src["file_id"]
    raise BadRequest("messages: image source type must be 'base64', 'url' or 'file'")


def blocks_text(content, names=None, results=None):
    """Text of a content value: a string, or text, image and tool_use blocks in
    order; tool_result blocks go to results (when given) as tool lines."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    out, calls = [], []
    for b in content:
        if isinstance(b, str):
            out.append(b)
            continue
        if not isinstance(b, dict):
            continue
        t = b.get("type")
        if t in (None, "text", "input_text", "output_text") and isinstance(b.get("text"), str):
            out.append(b["text"])
        elif t == "image":
            out.append(image_block(b))
        elif t == "tool_use" and names is not None:
            if not isinstance(b.get("name"), str):
                raise BadRequest("messages: tool_use.name: Field required")
            if isinstance(b.get("id"), str):
                names[b["id"]] = b["name"]
            calls.append(call_text(b["name"], b.get("input", {})))
        elif t == "tool_result":
            text = blocks_text(b.get("content"))
            if results is None:
                out.append(text)
            else:
                results.append(result_text((names or {}).get(b.get("tool_use_id")), text))
    text = "\n".join(out)
    if calls:
        text = "\n".join(([text] if text else []) + calls)
    return text


def conversation(data):
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: Field required (non-empty array)")
    conv, names = Conversation(), {}
    st = blocks_text(data.get("system"))
    if st:
        conv.system.append(st)
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise BadRequest("messages: Unexpected role; roles must be 'user' or "
                             "'assistant'")
        results = []
        text = blocks_text(m.get("content"), names, results)
        conv.msgs.extend(("tool", r) for r in results)
        if text or not results:
            conv.msgs.append((m["role"], text))
    return conv


def tools_of(tools):
    return [((t.get("name") or "tool"), t.get("input_schema")) if isinstance(t, dict)
            else ("tool", None) for t in (tools if isinstance(tools, list) else [])]


def forced_of(tc):
    if not isinstance(tc, dict):
        return None
    t = tc.get("type")
    if t in ("none", "any"):
        return t
    if t == "tool":
        return tc.get("name") or None
    return None


class AnthropicApp(ProviderApp):
    kind = "anthropic"

    def route_table(self):
        return {("POST", "/v1/messages"): self.messages,
                ("POST", "/v1/messages/count_tokens"): self.count,
                ("GET", "/v1/models"): self.models_list}

    def route_more(self, req):
        if req.method == "GET" and req.path.startswith("/v1/models/"):
            return self.model_get, req.path[len("/v1/models/"):]
        return None, None

    @staticmethod
    def error_obj(status, message, etype=None, code=None):
        if etype is None:
            etype = ERR_TYPES.get(status, "api_error" if status >= 500
                                  else "invalid_request_error")
        return {"type": "error", "error": {"type": etype, "message": message}}

    def json_error(self, e):
        return "There was an issue with your request body: invalid JSON (%s)" % e

    def not_found(self, req):
        return self.error(404, "Not Found")

    def model_404(self, model, what=None):
        return self.error(404, "model: %s" % model)

    def fault_etype(self, status):
        return "overloaded_error" if status == 529 else None

    def auth(self, req):
        h = req.headers
        if not h.get("x-api-key"):
            return self.error(401, "x-api-key header is required")
        if not h.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        return None

    def messages(self, req, data, _):
        model = data.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("model: Field required")
        if "max_tokens" not in data:
            raise BadRequest("max_tokens: Field required")
        max_t = opt_max_tokens(data.get("max_tokens"), "max_tokens")
        conv = conversation(data)
        if not self.valid_model(model):
            return self.model_404(model)
        stops = str_list(data.get("stop_sequences"), "stop_sequences")
        canon, last = conv.canonical(), conv.last_user()
        ptok = prompt_tokens(canon)
        call = choose_tool(conv, tools_of(data.get("tools")),
                           forced_of(data.get("tool_choice")))
        tool = call[0] if call else None
        pieces, reason, seq = limit(gen_pieces(canon, last, self.dissent(last)), max_t, stops)
        if tool:
            stop_reason, seq, otok = "tool_use", None, TOOL_TOKENS
        else:
            stop_reason = {"stop": "end_turn", "length": "max_tokens",
                           "stop_sequence": "stop_sequence"}[reason]
            otok = len(pieces)
        tool_block = {"type": "tool_use", "id": "toolu_" + ID_PH, "name": tool,
                      "input": call[1] if call else None}
        if not data.get("stream"):
            content = [tool_block] if tool else [{"type": "text", "text": "".join(pieces)}]
            return json_reply(200, {
                "id": "msg_" + ID_PH, "type": "message", "role": "assistant", "model": model,
                "content": content, "stop_reason": stop_reason, "stop_sequence": seq,
                "usage": {"input_tokens": ptok, "output_tokens": otok}})

        def ev(name, obj):
            return b"event: " + name.encode() + b"\ndata: " + jdump(obj) + b"\n\n"

        frames = [ev("message_start", {"type": "message_start", "message": {
            "id": "msg_" + ID_PH, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": ptok, "output_tokens": 1}}})]
        if tool:
            block = dict(tool_block, input={})
            delta = {"type": "input_json_delta", "partial_json": MARK}
            pieces = arg_pieces(args_json(call[1]))
        else:
            block, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": MARK}
        frames.append(ev("content_block_start", {"type": "content_block_start", "index": 0,
                                                 "content_block": block}))
        frames.append(ev("ping", {"type": "ping"}))
        pre, post = template({"type": "content_block_delta", "index": 0, "delta": delta})
        frames.extend(b"event: content_block_delta\ndata: " + pre + jdump(p) + post + b"\n\n"
                      for p in pieces)
        frames.append(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
        frames.append(ev("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": seq},
            "usage": {"output_tokens": otok}}))
        frames.append(ev("message_stop", {"type": "message_stop"}))
        err = ev("error", self.error_obj(529, "Overloaded"))
        return self.sse_reply(frames, err=(err, err))

    def count(self, req, data, _):
        model = data.get("model")
        if not self.valid_model(model):
            return self.model_404(model)
        return json_reply(200, {"input_tokens":
                                prompt_tokens(conversation(data).canonical())})

    def model_obj(self, m):
        return {"type": "model", "id": m, "display_name": m,
                "created_at": "2024-10-22T00:00:00Z"}

    def models_list(self, req, data, _):
        return json_reply(200, {"data": [self.model_obj(m) for m in self.models],
                                "has_more": False, "first_id": self.models[0],
                                "last_id": self.models[-1]})

    def model_get(self, req, data, model):
        if not self.valid_model(model):
            return self.model_404(model)
        return json_reply(200, self.model_obj(model))

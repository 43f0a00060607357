"""mock_provider: a deterministic mock of the OpenAI, Anthropic and Gemini APIs.

core       constants and helpers (JSON, ids, replies)
answers    the answer as a pure function of the conversation, shared by all formats
server     the HTTP layer: asyncio protocol, parser, writers (and frame cutting)
app        what every port shares: faults, stats, control API, cache, dispatch
openai     OpenAI wire format      anthropic  Anthropic wire format
gemini     Gemini wire format      main       command line and worker processes

Run it as util/mock_provider; see util/README.mock.md.
"""

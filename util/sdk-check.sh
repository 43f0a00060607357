#!/usr/bin/env bash
# The official OpenAI SDK (npm "openai") against the running gateway:
# chat completions from each provider type, embeddings, models, errors;
# then the official Anthropic SDK (npm "@anthropic-ai/sdk") against its
# POST /v1/messages: text, tools, streams, errors, through each provider;
# then the OpenAI SDK's Responses API against POST /v1/responses (text,
# function tools and outputs, streams, errors, through each provider).
# Needs "make run" (or HELIX_URL pointing at another gateway).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/sdk

"$top/util/sdk-install.sh"

cp "$top/util/sdk-check.mjs" "$top/util/sdk-check-anthropic.mjs" \
   "$top/util/sdk-check-responses.mjs" "$dir/"
cd "$dir"
url=${HELIX_URL:-http://127.0.0.1:8080/v1}
HELIX_URL=$url node sdk-check.mjs
HELIX_BASE=${HELIX_BASE:-${url%/v1}} node sdk-check-anthropic.mjs
HELIX_URL=$url node sdk-check-responses.mjs

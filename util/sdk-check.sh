#!/usr/bin/env bash
# The official OpenAI SDK (npm "openai") against the running gateway:
# chat completions from each provider type, embeddings, models, errors.
# Needs "make run" (or HELIX_URL pointing at another gateway).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/sdk

mkdir -p "$dir"
if [ ! -d "$dir/node_modules/openai" ]; then
    (cd "$dir" && npm init -y >/dev/null && npm install --silent openai@4)
fi

cp "$top/util/sdk-check.mjs" "$dir/"
cd "$dir"
HELIX_URL=${HELIX_URL:-http://127.0.0.1:8080/v1} node sdk-check.mjs

#!/usr/bin/env bash
# The official SDKs the SDK checks run (npm "openai" and "@anthropic-ai/sdk"),
# installed once into build/sdk.  Never fatal: without node, npm or the
# npm registry, it says so and the SDK tests skip, saying why.
set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build/sdk

if ! command -v npm >/dev/null 2>&1; then
    echo "sdk-install: no npm: the SDK checks will be skipped" >&2
    exit 0
fi

mkdir -p "$dir"
cd "$dir" || exit 0
[ -f package.json ] || npm init -y >/dev/null 2>&1

# (an older openai@4 has no Responses API: installed again)
for pkg in openai@4 @anthropic-ai/sdk; do
    name=${pkg%@4}
    if [ "$name" = openai ]; then
        [ -d node_modules/openai/resources/responses ] && continue
    else
        [ -d "node_modules/$name" ] && continue
    fi
    timeout 300 npm install --silent --no-audit --no-fund "$pkg" >&2 \
        || echo "sdk-install: npm install $pkg failed: its checks will" \
                "be skipped" >&2
done

exit 0

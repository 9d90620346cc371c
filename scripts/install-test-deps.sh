#!/bin/sh
# Installs what the test suite needs beyond a C compiler: node-llama-cpp
# (prebuilt llama.cpp for Node) for the GGUF turnkey test. Idempotent; when
# npm is missing or the registry is unreachable the GGUF llama.cpp checks are
# skipped by the test (and say so), the rest of the suite still runs.
set -u
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
    echo "install-test-deps: npm not found; the llama.cpp checks of test_gguf will be skipped" >&2
    exit 0
fi
if [ ! -d tests/llamacpp/node_modules/node-llama-cpp ]; then
    (cd tests/llamacpp && npm install --omit=optional --no-audit --no-fund \
        node-llama-cpp@3.22.1 @node-llama-cpp/linux-x64@3.22.1) ||
        echo "install-test-deps: npm install failed; the llama.cpp checks of test_gguf will be skipped" >&2
fi
exit 0

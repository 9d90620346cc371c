#!/bin/sh
# tokenizer_bench.sh — times BPE training (8192 merges) and encoding on ~10 MB.
#
# usage: bench/tokenizer_bench.sh [TEXT_FILE] [MEGABYTES]
# Expects `make` to have built build/libsmedjan.a; it only compiles the small
# driver bench/tokenizer_bench.c against that library (into build/bench/).
# The text defaults to ../shared/data/tinyshakespeare.txt, else the first
# data/*.txt, else /usr/share/dict/words, repeated up to MEGABYTES (10).
# Note: a repeated text has few distinct words, which flatters training; pass
# a large natural-language file for a harder case.
set -e
cd "$(dirname "$0")/.."
lib=build/libsmedjan.a
[ -f "$lib" ] || { echo "tokenizer_bench: $lib missing; run make first" >&2; exit 1; }
text=${1:-}
if [ -z "$text" ]; then
  for f in ../shared/data/tinyshakespeare.txt data/*.txt /usr/share/dict/words; do
    [ -f "$f" ] && { text=$f; break; }
  done
fi
[ -n "$text" ] && [ -f "$text" ] || { echo "tokenizer_bench: no text file found (pass one)" >&2; exit 1; }
mb=${2:-10}
mkdir -p build/bench
${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -Iinclude bench/tokenizer_bench.c "$lib" -fopenmp -lm -lpthread \
  -o build/bench/tokenizer_bench
echo "text: $text repeated to $mb MB"
build/bench/tokenizer_bench "$text" "$mb" $((8192 + 259))

#!/bin/sh
# The main job on the embedded corpus: train a tokenizer, prepare the data,
# train the `tiny` model for a few minutes on 2 cores, then print samples.
# Everything lands in out/demo/ (override with OUT=...). STEPS=... shortens it.
set -eu
cd "$(dirname "$0")/.."
BIN=build/smedjan
OUT=${OUT:-out/demo}
STEPS=${STEPS:-600}
CORPUS=data/devils_dictionary.txt
WARMUP=$((STEPS / 10 < 50 ? STEPS / 10 : 50))
INTERVAL=$((STEPS / 3 > 0 ? STEPS / 3 : 1))
[ -x "$BIN" ] || make
mkdir -p "$OUT"
echo "== 1/4 tokenizer: byte-level BPE, 2048 tokens, on $CORPUS"
$BIN tokenizer --input "$CORPUS" --vocab-size 2048 --output "$OUT/tok.bin"
echo "== 2/4 prepare: documents split on blank lines, 5% held out"
$BIN prepare --input "$CORPUS" --tokenizer "$OUT/tok.bin" --output "$OUT/train.bin" \
    --val-output "$OUT/val.bin" --val-fraction 0.05 --doc-separator '\n\n'
echo "== 3/4 train: tiny preset, $STEPS steps of 16 x 128 tokens"
$BIN train --dataset "$OUT/train.bin" --tokenizer "$OUT/tok.bin" --val-dataset "$OUT/val.bin" \
    --size tiny --batch-size 16 --seq-len 128 --steps "$STEPS" --lr 2e-3 --warmup "$WARMUP" \
    --checkpoint-dir "$OUT/ckpt" --checkpoint-interval "$INTERVAL" --seed 1337
echo "== 4/4 samples"
for p in "CYNIC, n." "LOVE, n." "The"; do
    $BIN generate --checkpoint "$OUT/ckpt/model.ckpt" --tokenizer "$OUT/tok.bin" --prompt "$p" \
        --max-tokens 60 --temperature 0.8 --top-k 40 --seed 7
    echo; echo "--"
done

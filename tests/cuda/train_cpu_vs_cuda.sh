#!/bin/sh
# Trains the same tiny model for 30 steps on the CPU and on CUDA (fp32, same
# seed, same data) for each family, and compares the loss curves from
# metrics.csv: every step's loss within 1e-4 relative (cuBLAS and our CPU
# GEMM round differently; AdamW amplifies it a little over 30 steps); then
# each family in bf16 mode on CUDA, plain and with --fp16-activations,
# against fp32 on the CPU (within 2e-3 and 3e-3).
# usage (from the repo root, after make CUDA=1): sh tests/cuda/train_cpu_vs_cuda.sh
set -eu
BIN=${BIN:-build-cuda/smedjan}
D=$(mktemp -d)
head -c 60000 data/devils_dictionary.txt > "$D/text.txt"
$BIN tokenizer --input "$D/text.txt" --vocab-size 400 --output "$D/tok.bin" 2>/dev/null
$BIN prepare --input "$D/text.txt" --tokenizer "$D/tok.bin" --output "$D/train.bin" 2>/dev/null
fail=0
for arch in llama gpt2; do
    for dev in cpu cuda; do
        $BIN train --dataset "$D/train.bin" --tokenizer "$D/tok.bin" --arch $arch --size custom --dim 64 \
            --layers 2 --heads 4 --batch-size 4 --seq-len 64 --steps 30 --lr 3e-3 --warmup 5 --seed 7 \
            --device $dev --threads 2 --checkpoint-dir "$D/$arch-$dev" --checkpoint-interval 30 >/dev/null 2>&1 ||
            { echo "FAIL $arch on $dev: train exited non-zero"; fail=1; continue; }
    done
    if awk -F, 'NR==FNR { if (FNR > 1) a[$1] = $2; next }
                FNR > 1 { n++; d = $2 - a[$1]; if (d < 0) d = -d; r = d / ($2 > 0 ? $2 : 1); if (r > w) w = r }
                END { printf "%s: %d steps, worst relative loss difference cpu vs cuda %.2e\n", arch, n, w; exit !(n == 30 && w <= 1e-4) }' \
            arch=$arch "$D/$arch-cpu/metrics.csv" "$D/$arch-cuda/metrics.csv"; then
        echo "PASS $arch"
    else
        echo "FAIL $arch"; fail=1
    fi
    echo "  cpu : $(sed -n '2p;$p' "$D/$arch-cpu/metrics.csv" | cut -d, -f1,2 | tr '\n' ' ')"
    echo "  cuda: $(sed -n '2p;$p' "$D/$arch-cuda/metrics.csv" | cut -d, -f1,2 | tr '\n' ' ')"
done
# bf16 mode (--bf16-matmul: bf16 products and, at head size 64, the flash
# attention kernels): the loss curve of the same model follows the fp32 CPU
# one within 2e-3 relative at every step: for Llama bf16 rounding gave
# 4.7e-5 and 6.7e-4 with two versions of the kernels (each run is
# deterministic, the rounding noise differs between versions); a wrong
# attention gradient (dK off by its own size) gave 4.2e-3. With
# --fp16-activations (the saved activations rounded to bf16 as well, the
# GPU's bf16-only tensors and in-place reads of them) the limit is 3e-3.
# Llama and GPT-2 at head size 64; the op checker is the kernels' test.
# GPT-2 at lr 1.5e-3: at 3e-3 its fp32 curve has a loss spike (4.96 ->
# 5.50 -> 5.72 -> 4.95 at steps 19-22), and there every bf16 build (the
# mma.sync and fused attention kernels too) lands 2e-3 to 1e-2 off for a
# step or two, the curves agreeing again after it (last losses within
# 1.3e-4): chaos at the spike, not a wrong gradient.
for arch in llama gpt2; do
    lr=3e-3; [ $arch = gpt2 ] && lr=1.5e-3
    for cfg in cpu cuda cuda16; do
        dev=cpu; extra=""
        case $cfg in cuda) dev=cuda; extra="--bf16-matmul" ;; cuda16) dev=cuda; extra="--bf16-matmul --fp16-activations" ;; esac
        $BIN train --dataset "$D/train.bin" --tokenizer "$D/tok.bin" --arch $arch --size custom --dim 128 --layers 2 \
            --heads 2 --batch-size 4 --seq-len 128 --steps 40 --lr $lr --warmup 5 --seed 7 --device $dev --threads 2 \
            $extra --checkpoint-dir "$D/bf16-$arch-$cfg" --checkpoint-interval 40 >/dev/null 2>&1 ||
            { echo "FAIL $arch bf16 check: train ($cfg) exited non-zero"; fail=1; }
    done
    for cfg in cuda cuda16; do
        lim=2e-3; [ $cfg = cuda16 ] && lim=3e-3
        if awk -F, 'NR==FNR { if (FNR > 1) a[$1] = $2; next }
                    FNR > 1 { n++; d = $2 - a[$1]; if (d < 0) d = -d; r = d / a[$1]; sr += r; if (r > w) { w = r; ws = $1 }; last = $2; lastc = a[$1] }
                    END { printf "%s %s (head size 64, flash attention): %d steps, worst relative loss difference fp32 cpu vs cuda %.2e at step %d (limit %s), mean %.2e, last loss %.4f (cpu %.4f)\n", arch, cfg == "cuda16" ? "bf16 --fp16-activations" : "bf16", n, w, ws, lim, sr / (n ? n : 1), last, lastc; exit !(n == 40 && w <= lim + 0) }' \
                arch=$arch cfg=$cfg lim=$lim "$D/bf16-$arch-cpu/metrics.csv" "$D/bf16-$arch-$cfg/metrics.csv"; then
            echo "PASS $arch $cfg"
        else
            echo "FAIL $arch $cfg"; fail=1
        fi
    done
done
rm -rf "$D"
exit $fail

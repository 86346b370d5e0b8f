#!/bin/sh
# One epoch of `digits train --device cuda` on the emulated device (2,000 rows of the bundled
# sample), then the model scored by `digits eval --held-out` (its 200 validation rows) on the
# CPU and on the emulated device: the
# run must finish, learn (held-out accuracy above 0.5, where chance is 0.1) and score the same
# on both devices within two images (near ties may flip between the two summation orders).
# Usage: train_epoch.sh DIGITS_EMULATED_BIN SOURCE_DIR
set -eu
bin=$1
src=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/digits-emu-train.XXXXXX")
trap 'rm -rf "$dir"' EXIT
data="$dir/train.csv"
gzip -dc "$src/data/sample/train.csv.gz" | head -n 2001 >"$data"
"$bin" train "$data" --device cuda --epochs 1 -o "$dir/m.dgt" 2>"$dir/train.log" ||
  { cat "$dir/train.log"; echo "FAIL: training on the emulated device"; exit 1; }
cat "$dir/train.log"
# the start line names the algorithms cuDNN's search chose, per convolution (FP32: FMA GEMMs)
grep -q "FP32 math; IMPLICIT_GEMM (bwd-filter ALGO_1) conv1, IMPLICIT_GEMM (bwd-data ALGO_1, bwd-filter ALGO_1) conv2-4" "$dir/train.log" ||
  { echo "FAIL: the training line does not name the emulated device's FP32 algorithms"; exit 1; }
acc=$(sed -n 's/.*val_accuracy \([0-9.]*\) lr.*/\1/p' "$dir/train.log" | tail -1)
[ -n "$acc" ] || { echo "FAIL: no val_accuracy in the training output"; exit 1; }
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' || { echo "FAIL: val_accuracy $acc <= 0.5"; exit 1; }
for device in cpu cuda; do
  "$bin" eval -m "$dir/m.dgt" "$data" --held-out --device "$device" >"$dir/eval-$device.txt" 2>&1 ||
    { cat "$dir/eval-$device.txt"; echo "FAIL: eval --device $device"; exit 1; }
done
correct() { sed -n 's/^accuracy: [0-9.]* (\([0-9]*\) correct.*/\1/p' "$1" | head -1; }
c_cpu=$(correct "$dir/eval-cpu.txt")
c_cuda=$(correct "$dir/eval-cuda.txt")
echo "eval: correct on the CPU $c_cpu, on the emulated device $c_cuda"
[ -n "$c_cpu" ] && [ -n "$c_cuda" ] || { cat "$dir/eval-cpu.txt"; echo "FAIL: no accuracy line"; exit 1; }
awk -v a="$c_cpu" -v b="$c_cuda" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 2) }' ||
  { echo "FAIL: CPU and emulated device differ by more than two images"; exit 1; }
echo "ok: one epoch on the emulated device, val_accuracy $acc"

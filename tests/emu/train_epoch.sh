#!/bin/sh
# One epoch of `digits train --device cuda` on the emulated device (2,000 rows of the bundled
# sample), then the model scored by `digits eval --held-out` (its 200 validation rows) on the
# CPU and on the emulated device: the run must finish, name its algorithms, learn (held-out
# accuracy above 0.5, where chance is 0.1) and score the same on both devices within two
# images. With MATH bf16: 1,000 rows at --math bf16; the run names the bf16 algorithms, the
# model file records math=bf16, it learns (above 0.3), and `eval --math bf16` on the emulated
# device runs and scores within two images of the same model's FP32 eval there plus the bf16
# rounding's share (five images).
# Usage: train_epoch.sh DIGITS_EMULATED_BIN SOURCE_DIR [MATH]
set -eu
bin=$1
src=$2
math=${3:-fp32}
. "$(dirname "$0")/cli_lib.sh"
data="$dir/train.csv"
if [ "$math" = bf16 ]; then
  sample_rows 1000 "$data"
  "$bin" train "$data" --device cuda --math bf16 --epochs 1 -o "$dir/m.dgt" 2>"$dir/train.log" ||
    { cat "$dir/train.log"; fail "training at --math bf16 on the emulated device"; }
  cat "$dir/train.log"
  grep -q "BF16 math; IMPLICIT_PRECOMP_GEMM (bwd-filter ALGO_1) conv1, IMPLICIT_PRECOMP_GEMM (bwd-data ALGO_0, bwd-filter ALGO_1) conv2-4" "$dir/train.log" ||
    fail "the training line does not name the emulated device's bf16 algorithms"
  grep -aqx "math=bf16" "$dir/m.dgt" || fail "the model file does not record math=bf16"
  floor=0.3
else
  sample_rows 2000 "$data"
  "$bin" train "$data" --device cuda --epochs 1 -o "$dir/m.dgt" 2>"$dir/train.log" ||
    { cat "$dir/train.log"; fail "training on the emulated device"; }
  cat "$dir/train.log"
  # the start line names the algorithms cuDNN's search chose, per convolution (FP32: FMA GEMMs)
  grep -q "FP32 math; IMPLICIT_GEMM (bwd-filter ALGO_1) conv1, IMPLICIT_GEMM (bwd-data ALGO_1, bwd-filter ALGO_1) conv2-4" "$dir/train.log" ||
    fail "the training line does not name the emulated device's FP32 algorithms"
  floor=0.5
fi
acc=$(sed -n 's/.*val_accuracy \([0-9.]*\) lr.*/\1/p' "$dir/train.log" | tail -1)
[ -n "$acc" ] || fail "no val_accuracy in the training output"
awk -v a="$acc" -v f="$floor" 'BEGIN { exit !(a > f) }' || fail "val_accuracy $acc <= $floor"
eval_alike "$dir/m.dgt" "$data"
if [ "$math" = bf16 ]; then
  "$bin" eval -m "$dir/m.dgt" "$data" --held-out --device cuda --math bf16 >"$dir/eval-bf16.txt" 2>&1 ||
    { cat "$dir/eval-bf16.txt"; fail "eval --device cuda --math bf16"; }
  correct_bf16=$(sed -n 's/^accuracy: [0-9.]* (\([0-9]*\) correct.*/\1/p' "$dir/eval-bf16.txt" | head -1)
  [ -n "$correct_bf16" ] || { cat "$dir/eval-bf16.txt"; fail "no accuracy line at bf16"; }
  echo "eval --math bf16 on the emulated device: correct $correct_bf16"
  awk -v a="$correct_cuda" -v b="$correct_bf16" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 5) }' ||
    fail "bf16 and FP32 inference on the emulated device differ by more than five images"
fi
echo "ok: one epoch on the emulated device at $math, val_accuracy $acc"

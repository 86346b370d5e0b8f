#!/bin/sh
# One epoch of `digits train --device cuda` on the emulated device (2,000 rows of the bundled
# sample), then the model scored by `digits eval --held-out` (its 200 validation rows) on the
# CPU and on the emulated device: the run must finish, name its algorithms, learn (held-out
# accuracy above 0.5, where chance is 0.1) and score the same on both devices within two
# images. Usage: train_epoch.sh DIGITS_EMULATED_BIN SOURCE_DIR
set -eu
bin=$1
src=$2
. "$(dirname "$0")/cli_lib.sh"
data="$dir/train.csv"
sample_rows 2000 "$data"
"$bin" train "$data" --device cuda --epochs 1 -o "$dir/m.dgt" 2>"$dir/train.log" ||
  { cat "$dir/train.log"; fail "training on the emulated device"; }
cat "$dir/train.log"
# the start line names the algorithms cuDNN's search chose, per convolution (FP32: FMA GEMMs)
grep -q "FP32 math; IMPLICIT_GEMM (bwd-filter ALGO_1) conv1, IMPLICIT_GEMM (bwd-data ALGO_1, bwd-filter ALGO_1) conv2-4" "$dir/train.log" ||
  fail "the training line does not name the emulated device's FP32 algorithms"
acc=$(sed -n 's/.*val_accuracy \([0-9.]*\) lr.*/\1/p' "$dir/train.log" | tail -1)
[ -n "$acc" ] || fail "no val_accuracy in the training output"
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' || fail "val_accuracy $acc <= 0.5"
eval_alike "$dir/m.dgt" "$data"
echo "ok: one epoch on the emulated device, val_accuracy $acc"

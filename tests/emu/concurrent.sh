#!/bin/sh
# Two ensemble members trained at once on the emulated device (--concurrent 2: each on its own
# backend from its own host thread, launching kernels at the same time), 200 sample rows, one
# epoch; then the ensemble scored on the emulated device and on the CPU alike within two
# images of the 20 held out.
# Usage: concurrent.sh DIGITS_EMULATED_BIN SOURCE_DIR
set -eu
bin=$1
src=$2
. "$(dirname "$0")/cli_lib.sh"
sample_rows 200 "$dir/train.csv"
"$bin" train "$dir/train.csv" --device cuda --ensemble 2 --concurrent 2 --epochs 1 \
  -o "$dir/e.dgt" >"$dir/train.txt" 2>&1 || { cat "$dir/train.txt"; fail "concurrent training"; }
cat "$dir/train.txt"
grep -q "an ensemble of 2 members.*2 at a time" "$dir/train.txt" || fail "no 2-at-a-time ensemble"
eval_alike "$dir/e.dgt" "$dir/train.csv"
echo "ok: concurrent members on the emulated device"

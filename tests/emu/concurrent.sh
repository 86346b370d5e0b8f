#!/bin/sh
# Two ensemble members trained at once on the emulated device (--concurrent 2: each on its own
# backend from its own host thread, launching kernels at the same time), 200 sample rows, one
# epoch; then the ensemble scored on the emulated device and on the CPU alike within two
# images of the 20 held out, and its members the same as when trained one after the other
# (--concurrent 1): their parameters are the same bytes.
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
"$bin" train "$dir/train.csv" --device cuda --ensemble 2 --concurrent 1 --epochs 1 \
  -o "$dir/s.dgt" >"$dir/train1.txt" 2>&1 || { cat "$dir/train1.txt"; fail "sequential training"; }
# the members' parameters: the last 2 x 887,530 floats before the file's CRC-32
params() { head -c -4 "$1" | tail -c $((2 * 887530 * 4)) | cksum; }
[ "$(params "$dir/e.dgt")" = "$(params "$dir/s.dgt")" ] ||
  fail "members trained concurrently differ from the same members trained one after the other"
echo "ok: concurrent members on the emulated device"

#!/bin/sh
# Two ensemble members trained at once on the emulated device (--concurrent 2: each on its own
# backend from its own host thread, launching kernels at the same time), 200 sample rows, one
# epoch; then the ensemble scored on the emulated device and on the CPU alike within two
# images of the 20 held out.
# Usage: concurrent.sh DIGITS_EMULATED_BIN SOURCE_DIR
set -eu
bin=$1
src=$2
dir=$(mktemp -d "${TMPDIR:-/tmp}/digits-emu-concurrent.XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
gzip -dc "$src/data/sample/train.csv.gz" | head -n 201 >"$dir/train.csv"
"$bin" train "$dir/train.csv" --device cuda --ensemble 2 --concurrent 2 --epochs 1 \
  -o "$dir/e.dgt" >"$dir/train.txt" 2>&1 || { cat "$dir/train.txt"; fail "concurrent training"; }
cat "$dir/train.txt"
grep -q "an ensemble of 2 members.*2 at a time" "$dir/train.txt" || fail "no 2-at-a-time ensemble"
for device in cpu cuda; do
  "$bin" eval -m "$dir/e.dgt" "$dir/train.csv" --held-out --device "$device" >"$dir/eval-$device.txt" 2>&1 ||
    { cat "$dir/eval-$device.txt"; fail "eval --device $device"; }
done
correct() { sed -n 's/^accuracy: [0-9.]* (\([0-9]*\) correct.*/\1/p' "$1" | head -1; }
a=$(correct "$dir/eval-cpu.txt")
b=$(correct "$dir/eval-cuda.txt")
[ -n "$a" ] && [ -n "$b" ] || fail "no accuracy line"
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 2) }' ||
  fail "CPU ($a) and emulated device ($b) differ by more than two images"
echo "ok: concurrent members on the emulated device; eval correct $a (CPU) and $b (emulated)"

#!/bin/sh
# The emulated device is a test fixture: `digits info` says so, `--device auto` trains on the
# CPU (saying why) and `bench --device all` leaves it out; `--device cuda` names it.
# Usage: auto_device.sh DIGITS_EMULATED_BIN SOURCE_DIR
set -eu
bin=$1
src=$2
. "$(dirname "$0")/cli_lib.sh"
"$bin" info >"$dir/info.txt" 2>&1 || fail "digits info"
grep -q "CUDA backend built, on the emulated device (a test fixture, not a GPU)" "$dir/info.txt" ||
  { cat "$dir/info.txt"; fail "info does not say the CUDA backend is on the emulated device"; }
grep -q "CUDA device 0: Digits emulated device" "$dir/info.txt" || fail "info does not name the device"
sample_rows 200 "$dir/train.csv"
"$bin" train "$dir/train.csv" --epochs 1 -o "$dir/m.dgt" >"$dir/auto.txt" 2>&1 ||
  { cat "$dir/auto.txt"; fail "train --device auto"; }
grep -q "the CUDA device of this build is the emulated test device; --device cuda uses it): running on the CPU" \
  "$dir/auto.txt" || { cat "$dir/auto.txt"; fail "--device auto did not say why it runs on the CPU"; }
grep -q "batch 86, cpu: " "$dir/auto.txt" || { cat "$dir/auto.txt"; fail "--device auto did not train on the CPU"; }
"$bin" bench --quick --device all --synthetic >"$dir/bench.txt" 2>&1 || { cat "$dir/bench.txt"; fail "bench"; }
grep -q "emulated test device" "$dir/bench.txt" ||
  { cat "$dir/bench.txt"; fail "bench --device all did not leave the emulated device out, saying so"; }
echo "ok: info names the emulated device; auto and bench --device all use the CPU"

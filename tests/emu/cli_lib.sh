# Shared by the emulated device's CLI tests (train_epoch.sh, concurrent.sh, auto_device.sh):
# sourced after `bin` (the digits-emulated executable) and `src` (the source folder) are set.

# A scratch folder in $dir, removed on exit.
dir=$(mktemp -d "${TMPDIR:-/tmp}/digits-emu.XXXXXX")
trap 'rm -rf "$dir"' EXIT

fail() { echo "FAIL: $*"; exit 1; }

# sample_rows N FILE: the header and the first N rows of the bundled sample.
sample_rows() { gzip -dc "$src/data/sample/train.csv.gz" | head -n "$(($1 + 1))" >"$2"; }

# eval_alike MODEL DATA: `digits eval --held-out` on the CPU and on the emulated device; they
# must score within two images of each other (near ties may flip between the two summation
# orders). Prints both counts.
eval_alike() {
  for device in cpu cuda; do
    "$bin" eval -m "$1" "$2" --held-out --device "$device" >"$dir/eval-$device.txt" 2>&1 ||
      { cat "$dir/eval-$device.txt"; fail "eval --device $device"; }
  done
  correct_cpu=$(sed -n 's/^accuracy: [0-9.]* (\([0-9]*\) correct.*/\1/p' "$dir/eval-cpu.txt" | head -1)
  correct_cuda=$(sed -n 's/^accuracy: [0-9.]* (\([0-9]*\) correct.*/\1/p' "$dir/eval-cuda.txt" | head -1)
  [ -n "$correct_cpu" ] && [ -n "$correct_cuda" ] || { cat "$dir/eval-cpu.txt"; fail "no accuracy line"; }
  echo "eval: correct on the CPU $correct_cpu, on the emulated device $correct_cuda"
  awk -v a="$correct_cpu" -v b="$correct_cuda" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 2) }' ||
    fail "CPU and emulated device differ by more than two images"
}

#!/bin/sh
# `digits bench --device cuda` on the emulated device: the counts it prints are what the step
# issues. A replayed training step is 2 launches (the step block's upload and the graph) and no
# host sync; the eager step 48 launches at FP32; the rates are timed by CUDA events; one epoch
# of dg_train (the second of two, 180 training images: 2 full batches and one of 8, 20
# validation images) is 2 graph launches and 4 host syncs: the two statistics resets (the
# epoch's and the validation's uploads) and the two reads (the epoch's trace, the validation's
# statistics). A sync inside the epoch's steps would make it 5 or more.
set -eu
bin=$1
src=$2
. "$src/tests/emu/cli_lib.sh"

"$bin" bench --device cuda --synthetic --quick --no-parse --batch 86 --steps 2 --reps 1 \
  --warmup 1 --infer-batch 0 --layer-batch 0 --epoch-rows 200 --json -q \
  >"$dir/bench.json" 2>"$dir/bench.err" || { cat "$dir/bench.err"; fail "bench"; }
cat "$dir/bench.json"

# field NAME: the first value of "NAME": in the JSON (one line per backend entry)
field() { tr ',{}' '\n\n\n' <"$dir/bench.json" | sed -n "s/^ *\"$1\": *//p" | head -1; }
eager() { sed -n 's/.*"eager": \(.*\)/\1/p' "$dir/bench.json" | tr ',{}' '\n\n\n' |
  sed -n "s/^ *\"$1\": *//p" | head -1; }
epoch() { sed -n 's/.*"epoch": {\([^}]*\)}.*/\1/p' "$dir/bench.json" | tr ',' '\n' |
  sed -n "s/^ *\"$1\": *//p" | head -1; }

expect() { [ "$2" = "$3" ] || fail "$1: expected $3, got '$2'"; }
expect "launches a replayed step" "$(field launches_per_step)" 2.00
expect "graph launches a step" "$(field graph_launches_per_step)" 1.00
expect "host syncs a replayed step" "$(field host_syncs_per_step)" 0.00
expect "launches an eager step" "$(eager launches_per_step)" 48.00
expect "host syncs an eager step" "$(eager host_syncs_per_step)" 0.00
expect "the clock" "$(field clock)" '"device"'
expect "epoch rows" "$(epoch rows)" 200
expect "epoch training rows" "$(epoch train_rows)" 180
expect "epoch steps" "$(epoch steps)" 3
expect "graph launches an epoch" "$(epoch graph_launches)" 2
expect "host syncs an epoch" "$(epoch host_syncs)" 4
echo "ok: 2 launches and 0 syncs a replayed step, 48 eager, 4 host syncs an epoch, device clock"

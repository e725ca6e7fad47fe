#!/usr/bin/env bash
# Instructions the server executes per durable purchase, counted by valgrind's callgrind: on a
# shared VM whose speed drifts by 2x within an hour, a count of instructions is what stays
# comparable between two builds (it varies by a few percent with how requests fall into batches).
# The server runs under callgrind (~50x slower) and the load generator drives its purchase phase;
# counting starts at the first purchase and stops when the phase and its checkpoints are done.
#
#   cargo build --release -p coffer-server -p coffer-loadgen
#   crates/coffer-loadgen/count-instructions.sh [BIN_DIR (target/release)] [SECONDS (20)]
#
# Needs valgrind (Debian: apt-get install valgrind). KEEP_WORK=1 keeps the per-thread callgrind
# files (their folder is printed first) for callgrind_annotate.
set -euo pipefail

bin_dir="${1:-target/release}"
seconds="${2:-20}"
grpc_port=50095
metrics_port=9467
work="$(mktemp -d)"; echo "work: $work" >&2
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"' EXIT

source "$(dirname "$0")/server-process.sh"
start_server "$work" "$bin_dir" "$grpc_port" "$metrics_port" \
  valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$work/callgrind.out"

purchases() {
  curl -s "127.0.0.1:$metrics_port/metrics" |
    awk '/^coffer_requests_total\{method="coffer.v1.WalletService\/Purchase",code="OK"\}/ { print $2 }'
}

"$bin_dir/coffer-loadgen" --endpoint "http://127.0.0.1:$grpc_port" --admin-key "$key" \
  --metrics-addr "127.0.0.1:$metrics_port" --players 1000 --duration-s "$seconds" \
  --phases purchase >"$work/loadgen.log" 2>&1 &
loadgen=$!
until [ -n "$(purchases)" ]; do sleep 0.1; done
callgrind_control --zero "$server" >/dev/null 2>&1
first="$(purchases)"
until grep -q 'checkpoints caught up' "$work/loadgen.log"; do sleep 0.2; done
callgrind_control --dump "$server" >/dev/null 2>&1
last="$(purchases)"
wait "$loadgen"
count=$((last - first))

# One file per thread (callgrind.out.1-NN): each thread's total, put under the part of the server
# a function only that thread runs names. Thread totals stay exact when the compiler inlines the
# functions that name them (a build with LTO inlines the writer's loop into its thread's closure).
total=0 workers=0 writer=0 checkpointer=0
for file in "$work"/callgrind.out.1-*; do
  callgrind_annotate --inclusive=yes "$file" >"$file.txt" 2>/dev/null
  thread="$(grep -F -- 'PROGRAM TOTALS' "$file.txt" | head -n 1 | awk '{ gsub(",", "", $1); printf "%d", $1 + 0 }')"
  thread="${thread:-0}"
  total=$((total + thread))
  if grep -qF 'tokio::runtime::scheduler::multi_thread::worker::run' "$file.txt"; then
    workers=$((workers + thread))
  elif grep -qF 'as coffer_store::Store>::write_batch' "$file.txt"; then
    writer=$((writer + thread))
  elif grep -qF 'write_generation' "$file.txt"; then
    checkpointer=$((checkpointer + thread))
  fi
done
per_purchase() { echo $(( ${1:-0} / count )); }
echo "purchases counted: $count"
echo "instructions per purchase: $(per_purchase "$total")"
echo "  tokio workers (gRPC, handlers):   $(per_purchase "$workers")"
echo "  writer (core, journal record):    $(per_purchase "$writer")"
echo "  checkpointer (ledger file):       $(per_purchase "$checkpointer")"
echo "  everything else:                  $(per_purchase $((total - workers - writer - checkpointer)))"

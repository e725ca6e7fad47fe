#!/usr/bin/env bash
# Where the CPU of a request goes, thread by thread, for the no-op call and for a durable
# purchase, against one server in its own process: each thread's CPU time (from
# /proc/PID/task/TID/stat, server and load generator) over a window in the middle of each phase,
# divided by the requests the server answered in that window. The no-op's threads are the
# transport's cost; what a purchase adds on top of it is the handler, the writer, the completer
# and the checkpointer. "busy" is the share of both vCPUs the two processes used: what is missing
# to 100 % was idle (or other processes).
#
#   cargo build --release -p coffer-server -p coffer-loadgen
#   [DURATION_S=20] [WINDOW_S=8] crates/coffer-loadgen/cpu-by-thread.sh [BIN_DIR (target/release)] [load generator options]
#
# 10,000 players; other options of the generator after the folder, e.g. `--concurrency 256`.
# The window starts 4 s into each phase and must end before it (WINDOW_S < DURATION_S - 4).
set -euo pipefail

bin_dir="${1:-target/release}"
shift || true
duration_s="${DURATION_S:-20}"
window_s="${WINDOW_S:-8}"
grpc_port=50094
metrics_port=9466
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

source "$(dirname "$0")/server-process.sh"
start_server "$work" "$bin_dir" "$grpc_port" "$metrics_port"

# "process thread-name ticks" for every thread of the server and of the generator.
thread_ticks() {
  local label pid
  for label in server generator; do
    [ "$label" = server ] && pid="$server" || pid="$loadgen"
    cat /proc/"$pid"/task/*/stat 2>/dev/null | awk -v label="$label" '{
      name = $0; sub(/^[^(]*\(/, "", name); sub(/\).*$/, "", name)
      rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
      ticks[name] += f[12] + f[13]
    } END { for (n in ticks) print label, n, ticks[n] }'
  done
}
answered() {
  curl -s "127.0.0.1:$metrics_port/metrics" |
    awk -v m="$1" '$1 == "coffer_requests_total{method=\"" m "\",code=\"OK\"}" { print $2 }'
}

for phase in noop purchase; do
  case "$phase" in
    noop) method="grpc.health.v1.Health/Check" ;;
    purchase) method="coffer.v1.WalletService/Purchase" ;;
  esac
  "$bin_dir/coffer-loadgen" --endpoint "http://127.0.0.1:$grpc_port" --admin-key "$key" \
    --metrics-addr "127.0.0.1:$metrics_port" --players 10000 --duration-s "$duration_s" \
    --phases "$phase" --json "$@" >"$work/$phase.json" 2>"$work/$phase.log" &
  loadgen=$!
  # The players are prepared first; the window starts once the phase itself has run a while.
  until [ "$(answered "$method" | cut -d. -f1)" -ge 1000 ] 2>/dev/null; do
    kill -0 "$loadgen" 2>/dev/null || { cat "$work/$phase.log" >&2; exit 1; }
    sleep 0.1
  done
  sleep 4
  thread_ticks >"$work/before"
  first="$(answered "$method")"
  started_ns="$(date +%s%N)"
  sleep "$window_s"
  thread_ticks >"$work/after"
  last="$(answered "$method")"
  ended_ns="$(date +%s%N)"
  wait "$loadgen" || { cat "$work/$phase.log" >&2; exit 1; }
  awk -v first="$first" -v last="$last" -v ns="$((ended_ns - started_ns))" \
    -v hz="$(getconf CLK_TCK)" -v cpus="$(nproc)" -v phase="$phase" '
    FNR == NR { before[$1 " " $2] = $3; next }
    { used[$1 " " $2] = $3 - before[$1 " " $2] }
    END {
      requests = last - first; seconds = ns / 1e9
      for (t in used) total += used[t]
      printf "%s: %.0f requests/s, busy %.1f %% of %d vCPUs, %.1f us of CPU per request\n",
        phase, requests / seconds, 100 * total / hz / seconds / cpus, cpus, 1e6 * total / hz / requests
      for (t in used) if (used[t] > 0) printf "  %-34s %6.2f us\n", t, 1e6 * used[t] / hz / requests
    }' "$work/before" "$work/after" | { read -r head; echo "$head"; sort -k3,3 -rn; }
done

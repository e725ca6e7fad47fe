#!/usr/bin/env bash
# CPU time per durable purchase, of the server and of the load generator, from one run of the
# purchase phase against a server in its own process. On a shared VM whose speed drifts, the
# server's CPU per purchase moves with the machine; its ratio to the generator's CPU per purchase
# in the same run (the generator's code is the same for both builds) is what compares two builds
# of the server. Run the two builds alternately (A B B A …) and compare the ratios.
#
#   cargo build --release -p coffer-server -p coffer-loadgen
#   [ROUNDS=3] [DURATION_S=10] crates/coffer-loadgen/cpu-per-purchase.sh [BIN_DIR (target/release)] [load generator options]
#
# 10,000 players, ROUNDS purchase phases of DURATION_S seconds; other options of the generator
# after the folder, e.g. `--concurrency 256`. The server's CPU includes its checkpoints and the players' preparation (the same for
# both builds); the generator's includes that preparation too.
set -euo pipefail

bin_dir="${1:-target/release}"
shift || true
grpc_port=50096
metrics_port=9468
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

source "$(dirname "$0")/server-process.sh"
start_server "$work" "$bin_dir" "$grpc_port" "$metrics_port"

server_ticks() { awk '{ print $14 + $15 }' "/proc/$server/stat"; }
before="$(server_ticks)"
# `times` in the subshell reports the CPU its children (the generator) used.
generator_cpu="$(
  "$bin_dir/coffer-loadgen" --endpoint "http://127.0.0.1:$grpc_port" --admin-key "$key" \
    --metrics-addr "127.0.0.1:$metrics_port" --players 10000 --duration-s "${DURATION_S:-10}" \
    --rounds "${ROUNDS:-3}" --phases purchase --json "$@" >"$work/result.json" 2>"$work/loadgen.log" ||
    { cat "$work/loadgen.log" >&2; exit 1; }
  times
)"
after="$(server_ticks)"

python3 - "$work/result.json" "$before" "$after" "$(getconf CLK_TCK)" "$generator_cpu" <<'PY'
import json, re, sys
result, before, after, ticks_per_s, generator = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
run = json.load(open(result))
purchases = sum(phase["requests"] for round in run["rounds"] for phase in round)
seconds = lambda t: int(t[0]) * 60 + float(t[1])
# `times` prints the subshell's own user and system time, then its children's: the generator's.
generator_s = sum(seconds(t) for t in re.findall(r"(\d+)m([\d.]+)s", generator)[2:])
server_us = 1e6 * (after - before) / ticks_per_s / purchases
generator_us = 1e6 * generator_s / purchases
rates = ", ".join(f"{phase['per_second']:.0f}" for round in run["rounds"] for phase in round)
print(f"purchases: {purchases} (answered/s per round: {rates})")
print(f"server CPU per purchase:    {server_us:.1f} us")
print(f"generator CPU per purchase: {generator_us:.1f} us")
print(f"server / generator:         {server_us / generator_us:.3f}")
print(f"ledger verifier clean: {run['verifier']['clean']}")
PY

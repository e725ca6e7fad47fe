# Sourced by the measuring scripts beside it (count-instructions.sh, cpu-per-purchase.sh).
#
# start_server WORK BIN_DIR GRPC_PORT METRICS_PORT [WRAPPER ARGS…]: starts the server from
# BIN_DIR with its data in WORK/data and its log in WORK/server.log, under WRAPPER when one is
# given (e.g. valgrind), waits for its development admin key and sets `server` (its pid) and
# `key`.
start_server() {
  local work="$1" bin_dir="$2" grpc_port="$3" metrics_port="$4"
  shift 4
  "$@" "$bin_dir/coffer" --listen-addr "127.0.0.1:$grpc_port" --data-dir "$work/data" \
    --metrics-addr "127.0.0.1:$metrics_port" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 600); do
    grep -q 'development admin key: ' "$work/server.log" && break
    sleep 0.1
  done
  key="$(grep -o 'development admin key: [^ ]*' "$work/server.log" | head -n 1 | sed 's/.*: //; s/"//g')"
}

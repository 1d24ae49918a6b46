#!/usr/bin/env bash
# Instructions per request of the tokio servers of `benches/http.rs` (HttpServer,
# hyper-util's server, `axum::serve`), counted by valgrind's callgrind: unlike CPU time on
# a shared 2-core machine, the count is the same from one run to the next within about 1%.
#
#   bash benches/http_instructions.sh            # about 80 s
#
# Each server runs alone under `valgrind --tool=callgrind --cache-sim=yes`, started by
# `benches/http.rs` with `HTTP_BENCH_SERVE`; `wrk -t1 -c64` warms it up for 2 s, then
# loads it for 10 s while callgrind counts (from `callgrind_control -z` to `-d`). The
# count covers the whole process (the runtime's workers and its I/O driver), divided by
# the requests `wrk` completed. callgrind runs one thread at a time, so the figures say
# how much work a request takes, not how fast it goes. The smol servers are left out:
# under valgrind, smol's executor spins while it waits, and its count says more about the
# wait than about the requests.
#
# Needs valgrind (with callgrind_control) and wrk: `apt-get install valgrind wrk`.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in valgrind callgrind_control wrk; do
    command -v "$tool" >/dev/null || { echo "http_instructions: SKIPPED, no $tool (apt-get install valgrind wrk)"; exit 0; }
done

bench=$(cargo bench --all-features --bench http --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | tail -1 | sed 's/"executable":"\(.*\)"/\1/' || true)
[ -n "$bench" ] && [ -x "$bench" ] || {
    echo "http_instructions: cannot build or find the http benchmark's binary" \
        "(cargo bench --all-features --bench http --no-run)" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CONNECTIONS=64
SECONDS_MEASURED=10

# count <server> <path>: prints "<instructions per request> <L1i misses per request>"
count() {
    local server=$1 path=$2 out=$work/callgrind.out
    rm -f "$out"*
    mkfifo "$work/stdin"
    HTTP_BENCH_SERVE="$server" valgrind --tool=callgrind --cache-sim=yes --dump-instr=no \
        --callgrind-out-file="$out" "$bench" --bench <"$work/stdin" >"$work/stdout" 2>"$work/stderr" &
    local valgrind_pid=$!
    exec 9>"$work/stdin" # held open: the server serves until it closes
    local addr=""
    for _ in $(seq 120); do
        addr=$(grep -o 'http://[0-9.:]*' "$work/stdout" || true)
        [ -n "$addr" ] && break
        sleep 0.5
    done
    [ -n "$addr" ] || { echo "http_instructions: $server did not start" >&2; cat "$work/stderr" >&2; exit 1; }
    wrk -t1 -c$CONNECTIONS -d2s "$addr$path" >/dev/null
    # Counting from here: the start-up and the warm-up are not in the figures.
    callgrind_control -z "$valgrind_pid" >"$work/control" 2>&1 ||
        { echo "http_instructions: callgrind_control -z failed" >&2; cat "$work/control" >&2; exit 1; }
    wrk -t1 -c$CONNECTIONS -d${SECONDS_MEASURED}s "$addr$path" >"$work/wrk"
    callgrind_control -d "$valgrind_pid" >"$work/control" 2>&1 ||
        { echo "http_instructions: callgrind_control -d failed" >&2; cat "$work/control" >&2; exit 1; }
    exec 9>&-
    wait "$valgrind_pid" || true
    rm -f "$work/stdin"
    local requests
    requests=$(awk '/requests in/ {print $1}' "$work/wrk")
    if [ -z "$requests" ] || [ "$requests" -eq 0 ] || grep -q "Socket errors\|Non-2xx" "$work/wrk"; then
        echo "http_instructions: the load on $server failed:" >&2
        cat "$work/wrk" >&2
        exit 1
    fi
    # `-d` writes `<file>.1`, the measured seconds; the end of the process writes `<file>`.
    local dump=$out.1
    [ -f "$dump" ] || { echo "http_instructions: callgrind wrote no dump for $server" >&2; exit 1; }
    awk -v requests="$requests" '
        /^events:/ { for (i = 2; i <= NF; i++) column[$i] = i }
        /^summary:/ { printf "%.0f %.0f\n", $column["Ir"] / requests, $column["I1mr"] / requests; exit }' "$dump"
}

echo "instructions per request under callgrind, wrk -t1 -c$CONNECTIONS for ${SECONDS_MEASURED} s"
echo
echo "| handler | server | instructions per request | L1i misses per request | instructions / hyper-util's |"
echo "| --- | --- | --- | --- | --- |"
for handler in "hello:/" "1 ms sleep:/sleep"; do
    name=${handler%%:*} path=${handler#*:}
    base=""
    for server in "tokio hyper-util" "tokio axum" "tokio lifecycle"; do
        read -r instructions misses < <(count "$server" "$path")
        [ -z "$base" ] && base=$instructions
        ratio=$(awk -v a="$instructions" -v b="$base" 'BEGIN { printf "%.3f", a / b }')
        echo "| $name | ${server#tokio } | $instructions | $misses | ${ratio}× |"
    done
done

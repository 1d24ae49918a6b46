#!/usr/bin/env bash
# Instructions per request of the tokio servers of `benches/http.rs` (HttpServer,
# hyper-util's server, `axum::serve`), counted by valgrind's callgrind: unlike CPU time on
# a shared 2-core machine, the count is the same from one run to the next within about 1%.
#
#   bash benches/http_instructions.sh            # about 3 minutes
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
# Needs valgrind (callgrind_control, callgrind_annotate) and wrk: `apt-get install
# valgrind wrk`.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in valgrind callgrind_control callgrind_annotate wrk; do
    command -v "$tool" >/dev/null || { echo "http_instructions: SKIPPED, no $tool (apt-get install valgrind wrk)"; exit 0; }
done

bench=$(cargo bench --all-features --bench http --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | tail -1 | sed 's/"executable":"\(.*\)"/\1/')
[ -x "$bench" ] || { echo "http_instructions: cannot find the http benchmark's binary"; exit 1; }

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
    callgrind_control -z "$valgrind_pid" >/dev/null 2>&1
    local requests
    requests=$(wrk -t1 -c$CONNECTIONS -d${SECONDS_MEASURED}s "$addr$path" | awk '/requests in/ {print $1}')
    callgrind_control -d "$valgrind_pid" >/dev/null 2>&1
    exec 9>&-
    wait "$valgrind_pid" || true
    rm -f "$work/stdin"
    # The dump taken by `-d` (the last file): its totals are the measured 10 s.
    local dump
    dump=$(ls "$out".* | sort -t. -k3 -n | tail -1)
    callgrind_annotate "$dump" 2>/dev/null | awk -v requests="$requests" '
        /PROGRAM TOTALS/ { gsub(",", ""); printf "%.0f %.0f\n", $1 / requests, $7 / requests; exit }'
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

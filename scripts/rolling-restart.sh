#!/usr/bin/env bash
# A rolling restart of examples/service behind HAProxy, under load, must not fail a
# single request.
#
# Two instances run behind HAProxy (deploy/haproxy.cfg, health checks on
# /health/ready). wrk sends requests through HAProxy for the whole run while each
# instance in turn gets SIGTERM, must exit 0 within its shutdown budget, and is started
# again on the same ports and data directory; the next one is restarted only once
# HAProxy sees the first UP again. Just before each SIGTERM, a request longer than the
# drain delay is sent straight to the instance: it must be answered 200 (the stop waits
# for requests in flight).
#
# Passes when wrk saw no socket error and no non-2xx response, every instance exited 0,
# no request was left unanswered or needed a retry in HAProxy, and enough requests were
# made. Prints one summary line:
#
#   rolling restart: 41234 requests, 0 non-2xx, 0 socket errors (connect 0, read 0,
#   write 0, timeout 0), 2 restarts
#
# Usage: scripts/rolling-restart.sh   (from any directory; needs haproxy, wrk and curl,
# installed with apt-get when missing and running as root). Environment knobs:
#   ROLLING_WRK_DURATION  seconds of load (default 22)
#   ROLLING_MIN_RPS       fail below this average rate (default 50 requests/s)
#   ROLLING_BASE_PORT     first port tried (default 18080; see `choose_ports`)
#   ROLLING_LOG_DIR       where the logs of a failed run are kept
#                         (default target/rolling-restart-logs)
#   ROLLING_DRAIN_DELAY_MS  the instances' drain delay (default 2000); 0 shows what a
#                         restart without a drain does to the requests (it must fail)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

# --- settings -------------------------------------------------------------------------

# The instances' budget. The drain delay must be longer than HAProxy's detection time
# (about 0.3 s, 1.8 s worst case: see deploy/haproxy.cfg), so HAProxy stops sending new
# requests before the app stops accepting. Budget 10 s = 2 s drain + 5 s stop phase +
# 3 s flush reserve (the default), enough for the 2.8 s request in flight below.
DRAIN_DELAY_MS=${ROLLING_DRAIN_DELAY_MS:-2000}
DRAIN_DELAY=${DRAIN_DELAY_MS}ms
SHUTDOWN_TIMEOUT=10s
SHUTDOWN_TIMEOUT_S=10
# The request in flight at each SIGTERM: longer than the drain delay, so it is still
# running when the app stops accepting and closes idle connections.
INFLIGHT_MS=2800

WRK_DURATION=${ROLLING_WRK_DURATION:-22}
WRK_THREADS=2
WRK_CONNECTIONS=${ROLLING_WRK_CONNECTIONS:-256}
MIN_RPS=${ROLLING_MIN_RPS:-50}
MIN_REQUESTS=$((MIN_RPS * WRK_DURATION))
WARMUP_S=3     # load before the first restart
SETTLE_S=3     # load between a restarted instance being UP and the next restart
LOG_DIR=${ROLLING_LOG_DIR:-$ROOT/target/rolling-restart-logs}

BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/service
CFG=$ROOT/deploy/haproxy.cfg

# --- helpers --------------------------------------------------------------------------

T0=$(date +%s%N)
log() {
    local now
    now=$(date +%s%N)
    printf '[%7.3fs] %s\n' "$(((now - T0) / 1000000))e-3" "$*"
}
die() {
    log "FAIL: $*" >&2
    exit 1
}
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

need_tools() {
    local missing=() tool
    for tool in haproxy wrk curl; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    [ ${#missing[@]} -eq 0 ] && return
    if [ "$(id -u)" != 0 ]; then
        echo "error: ${missing[*]} missing, and not root to apt-get install them" >&2
        echo "       install them (Debian/Ubuntu: apt-get install haproxy wrk curl) and rerun" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: ${missing[*]} missing and there is no apt-get to install them" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's package may try to start a system haproxy; only ours must run (in a
    # container without an init system nothing starts).
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# LB base, app base+1/+2, stats base+10, probes base+1001/+1002 (18080: 18081, 18082,
# 18090, 19081, 19082). The first base whose ports are all free is used.
choose_ports() {
    local base p busy
    for base in "${ROLLING_BASE_PORT:-18080}" 28080 38080 48080; do
        busy=
        for p in "$base" $((base + 1)) $((base + 2)) $((base + 10)) $((base + 1001)) $((base + 1002)); do
            if port_busy "$p"; then busy=$p; break; fi
        done
        if [ -z "$busy" ]; then
            LB_PORT=$base
            APP_PORT=([1]=$((base + 1)) [2]=$((base + 2)))
            PROBE_PORT=([1]=$((base + 1001)) [2]=$((base + 1002)))
            STATS_PORT=$((base + 10))
            return
        fi
        log "port $busy is in use, trying other ports"
    done
    die "no free set of ports found"
}

# --- cleanup --------------------------------------------------------------------------

TMP=
declare -A PID=()
HAPROXY_PID=
WRK_PID=
INFLIGHT_PID=
FAILED=1 # until the very end

stop_pids() { # pid...: only processes this script started
    # SIGTERM; a second one ends an instance's drain delay at once. Whatever is left
    # after 5 s gets SIGKILL.
    local pids=() pid alive
    for pid in "$@"; do
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && pids+=("$pid")
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 0.1
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 50); do
        alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        [ $alive = 1 ] || break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

show_logs() {
    [ -n "$TMP" ] && [ -d "$TMP" ] || return 0
    rm -rf "$LOG_DIR"
    mkdir -p "$LOG_DIR"
    cp -r "$TMP"/. "$LOG_DIR"/ 2>/dev/null || true
    local f
    echo "--- logs kept in $LOG_DIR" >&2
    for f in "$LOG_DIR"/app1.out "$LOG_DIR"/app2.out "$LOG_DIR"/haproxy.log "$LOG_DIR"/haproxy.err "$LOG_DIR"/wrk.out; do
        [ -f "$f" ] || continue
        echo "--- tail $f" >&2
        tail -n 40 "$f" >&2
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    stop_pids "$WRK_PID" "$INFLIGHT_PID" "${PID[1]:-}" "${PID[2]:-}"
    stop_pids "$HAPROXY_PID"
    if [ "$status" != 0 ] || [ "$FAILED" = 1 ]; then
        show_logs
        [ "$status" != 0 ] || status=1
    fi
    [ -n "$TMP" ] && rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- instances ------------------------------------------------------------------------

start_instance() { # n
    local n=$1
    echo "=== start $(date -u +%FT%T.%NZ)" >>"$TMP/app$n.out"
    "$BIN" \
        --addr "127.0.0.1:${APP_PORT[$n]}" \
        --health-addr "127.0.0.1:${PROBE_PORT[$n]}" \
        --data-dir "$TMP/data$n" \
        --drain-delay "$DRAIN_DELAY" \
        --shutdown-timeout "$SHUTDOWN_TIMEOUT" \
        >>"$TMP/app$n.out" 2>&1 &
    PID[$n]=$!
}

wait_ready() { # n: until /health/ready answers 200
    local n=$1 deadline=$((SECONDS + 20))
    until curl -fsS -o /dev/null -m 1 "http://127.0.0.1:${PROBE_PORT[$n]}/health/ready" 2>/dev/null; do
        kill -0 "${PID[$n]}" 2>/dev/null || die "app$n exited while starting (see app$n.out)"
        [ $SECONDS -lt $deadline ] || die "app$n not ready after 20 s"
        sleep 0.05
    done
}

# The status HAProxy gives a server: UP, DOWN, "UP 1/2" (going down), "DOWN 1/2"...
lb_status() { # server
    curl -fsS -m 1 "http://127.0.0.1:$STATS_PORT/stats;csv" 2>/dev/null |
        awk -F, -v sv="$1" '$1 == "be_app" && $2 == sv { print $18; exit }'
}

wait_lb_status() { # server status timeout_s
    local deadline=$((SECONDS + $3))
    until [ "$(lb_status "$1")" = "$2" ]; do
        [ $SECONDS -lt $deadline ] || die "HAProxy does not see $1 $2 after $3 s (it says: $(lb_status "$1"))"
        sleep 0.02
    done
}

# Sum of a counter in a Prometheus text snapshot, over all its label sets.
prom_sum() { # file metric
    awk -v m="$2" '($1 == m || index($1, m "{") == 1) { s += $NF } END { printf "%d\n", s }' "$1"
}

RESTARTS=0
EXIT_FAILURES=0
INFLIGHT_FAILURES=0
UNANSWERED=0
DETECT_MAX_MS=0
SLOW_DETECTIONS=0

restart_instance() { # n
    local n=$1 t code status=0 detect_ms exit_ms
    # A request longer than the drain delay, straight to the instance, in flight at
    # SIGTERM.
    curl -s -o /dev/null -m 15 -w '%{http_code}' \
        "http://127.0.0.1:${APP_PORT[$n]}/work?ms=$INFLIGHT_MS" >"$TMP/inflight$n" 2>&1 &
    INFLIGHT_PID=$!
    sleep 0.2

    log "app$n: SIGTERM (pid ${PID[$n]})"
    t=$(date +%s%N)
    kill -TERM "${PID[$n]}"

    # HAProxy must take it out well within the drain delay.
    wait_lb_status "app$n" DOWN 10
    detect_ms=$(ms_since "$t")
    [ "$detect_ms" -le "$DETECT_MAX_MS" ] || DETECT_MAX_MS=$detect_ms
    log "app$n: DOWN in HAProxy after ${detect_ms} ms (drain delay ${DRAIN_DELAY_MS} ms)"
    if [ "$detect_ms" -ge "$DRAIN_DELAY_MS" ]; then
        SLOW_DETECTIONS=$((SLOW_DETECTIONS + 1))
        log "app$n: FAILED: HAProxy saw it DOWN only after the drain delay"
    fi

    # Its exit, within the budget (plus a margin for the process teardown).
    while kill -0 "${PID[$n]}" 2>/dev/null; do
        [ "$(ms_since "$t")" -lt $(((SHUTDOWN_TIMEOUT_S + 5) * 1000)) ] || {
            kill -KILL "${PID[$n]}" 2>/dev/null || true
            log "app$n: still running $((SHUTDOWN_TIMEOUT_S + 5)) s after SIGTERM, killed"
            break
        }
        sleep 0.02
    done
    wait "${PID[$n]}" || status=$?
    exit_ms=$(ms_since "$t")
    PID[$n]=
    log "app$n: exited with code $status after ${exit_ms} ms"
    if [ "$status" != 0 ]; then
        EXIT_FAILURES=$((EXIT_FAILURES + 1))
        log "app$n: FAILED: exit code $status (see app$n.out)"
    fi

    wait "$INFLIGHT_PID" || true
    INFLIGHT_PID=
    code=$(cat "$TMP/inflight$n")
    if [ "$code" = 200 ]; then
        log "app$n: the request in flight at SIGTERM (/work?ms=$INFLIGHT_MS) got 200"
    else
        INFLIGHT_FAILURES=$((INFLIGHT_FAILURES + 1))
        log "app$n: FAILED: the request in flight at SIGTERM got '$code' instead of 200"
    fi

    # What the instance counted, from the snapshot its flush wrote.
    local prom="$TMP/data$n/metrics.prom" received answered draining
    if [ -f "$prom" ]; then
        received=$(prom_sum "$prom" http_requests_received_total)
        answered=$(prom_sum "$prom" http_requests_total)
        draining=$(prom_sum "$prom" http_requests_during_shutdown_total)
        cp "$prom" "$TMP/metrics-app$n-run$RESTARTS.prom"
        log "app$n: served $answered requests ($draining while draining), received $received"
        if [ "$received" != "$answered" ]; then
            UNANSWERED=$((UNANSWERED + received - answered))
            log "app$n: FAILED: $((received - answered)) requests received and never answered"
        fi
    else
        log "app$n: FAILED: no metrics snapshot $prom"
        EXIT_FAILURES=$((EXIT_FAILURES + 1))
    fi
    rm -f "$prom"

    RESTARTS=$((RESTARTS + 1))
    start_instance "$n"
    wait_ready "$n"
    log "app$n: restarted (pid ${PID[$n]}), ready after $(ms_since "$t") ms since SIGTERM"
    wait_lb_status "app$n" UP 10
    log "app$n: UP in HAProxy"
}

# --- run ------------------------------------------------------------------------------

need_tools
log "building the service (release)"
cargo build --release --example service
[ -x "$BIN" ] || die "$BIN was not built"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rolling-restart.XXXXXX")
choose_ports
log "ports: haproxy $LB_PORT (stats $STATS_PORT), app ${APP_PORT[1]}/${APP_PORT[2]}, probes ${PROBE_PORT[1]}/${PROBE_PORT[2]}; files in $TMP"

start_instance 1
start_instance 2
wait_ready 1
wait_ready 2
log "both instances ready"

export LB_ADDR="127.0.0.1:$LB_PORT" LB_STATS_ADDR="127.0.0.1:$STATS_PORT"
export APP1_ADDR="127.0.0.1:${APP_PORT[1]}" APP1_PROBE_PORT="${PROBE_PORT[1]}"
export APP2_ADDR="127.0.0.1:${APP_PORT[2]}" APP2_PROBE_PORT="${PROBE_PORT[2]}"
haproxy -c -q -f "$CFG" || die "haproxy rejects $CFG"
# -db: foreground. Its log goes to stdout (`log stdout` in the config, timestamped);
# stderr repeats server state changes as warnings, and has any alert.
haproxy -db -f "$CFG" >"$TMP/haproxy.log" 2>"$TMP/haproxy.err" &
HAPROXY_PID=$!
wait_lb_status app1 UP 10
wait_lb_status app2 UP 10
log "haproxy (pid $HAPROXY_PID) sees both UP"

# The load: mostly /work?ms=5 (a row written each), one request in ten /stats.
cat >"$TMP/mix.lua" <<'EOF'
local n = 0
request = function()
    n = n + 1
    if n % 10 == 0 then
        return wrk.format("GET", "/stats")
    end
    return wrk.format("GET", "/work?ms=5")
end
EOF
log "wrk: ${WRK_DURATION}s, $WRK_THREADS threads, $WRK_CONNECTIONS connections"
wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${WRK_DURATION}s" --timeout 5s --latency \
    -s "$TMP/mix.lua" "http://127.0.0.1:$LB_PORT" >"$TMP/wrk.out" 2>&1 &
WRK_PID=$!

sleep "$WARMUP_S"
for n in 1 2; do
    restart_instance "$n"
    sleep "$SETTLE_S"
done
kill -0 "$WRK_PID" 2>/dev/null ||
    die "wrk ended before the restarts were done: raise ROLLING_WRK_DURATION (now $WRK_DURATION)"
log "restarts done, waiting for wrk"
wrk_status=0
wait "$WRK_PID" || wrk_status=$?
WRK_PID=
[ "$wrk_status" = 0 ] || die "wrk failed with code $wrk_status: $(cat "$TMP/wrk.out")"

# --- verdict --------------------------------------------------------------------------

sed 's/^/    /' "$TMP/wrk.out"

requests=$(awk '/ requests in / { print $1; exit }' "$TMP/wrk.out")
non2xx=$(awk -F: '/Non-2xx or 3xx responses/ { gsub(/ /, "", $2); print $2; exit }' "$TMP/wrk.out")
read -r s_connect s_read s_write s_timeout < <(
    awk '/Socket errors:/ { gsub(/,/, ""); print $4, $6, $8, $10; exit }' "$TMP/wrk.out"
) || true # no such line when there was no socket error
requests=${requests:-0} non2xx=${non2xx:-0}
s_connect=${s_connect:-0} s_read=${s_read:-0} s_write=${s_write:-0} s_timeout=${s_timeout:-0}
socket_errors=$((s_connect + s_read + s_write + s_timeout))

# HAProxy's own counters for the backend: a retry or redispatch saves the client but
# means a connection to an instance failed; errors on the server side too.
read -r lb_retries lb_redispatches lb_econ lb_eresp lb_5xx < <(
    curl -fsS -m 2 "http://127.0.0.1:$STATS_PORT/stats;csv" |
        awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i }
                 $1 == "be_app" && $2 == "BACKEND" {
                     print $col["wretr"] + 0, $col["wredis"] + 0, $col["econ"] + 0,
                           $col["eresp"] + 0, $col["hrsp_5xx"] + 0 }'
) || die "cannot read HAProxy's stats"

log "HAProxy detected each SIGTERM in at most ${DETECT_MAX_MS} ms (drain delay ${DRAIN_DELAY_MS} ms)"
echo "haproxy: $lb_retries retries, $lb_redispatches redispatches, $lb_econ connection errors, $lb_eresp response errors, $lb_5xx 5xx"
echo "instances: $EXIT_FAILURES bad exits, $INFLIGHT_FAILURES in-flight requests not answered 200, $UNANSWERED requests unanswered"
echo "rolling restart: $requests requests, $non2xx non-2xx, $socket_errors socket errors (connect $s_connect, read $s_read, write $s_write, timeout $s_timeout), $RESTARTS restarts"

problems=()
[ "$requests" -ge "$MIN_REQUESTS" ] || problems+=("only $requests requests (minimum $MIN_REQUESTS)")
[ "$non2xx" = 0 ] || problems+=("$non2xx non-2xx responses")
[ "$socket_errors" = 0 ] || problems+=("$socket_errors socket errors")
[ "$RESTARTS" = 2 ] || problems+=("$RESTARTS restarts instead of 2")
[ "$SLOW_DETECTIONS" = 0 ] ||
    problems+=("$SLOW_DETECTIONS times HAProxy saw an instance DOWN only after its drain delay")
[ "$EXIT_FAILURES" = 0 ] || problems+=("$EXIT_FAILURES instances exited badly")
[ "$INFLIGHT_FAILURES" = 0 ] || problems+=("$INFLIGHT_FAILURES requests in flight at SIGTERM failed")
[ "$UNANSWERED" = 0 ] || problems+=("$UNANSWERED requests received and never answered")
[ "$lb_retries" = 0 ] && [ "$lb_redispatches" = 0 ] ||
    problems+=("HAProxy retried $lb_retries and redispatched $lb_redispatches requests")
[ "$lb_econ" = 0 ] && [ "$lb_eresp" = 0 ] && [ "$lb_5xx" = 0 ] ||
    problems+=("HAProxy counted $lb_econ connection errors, $lb_eresp response errors, $lb_5xx 5xx")
# HAProxy logs only anomalies (option dontlog-normal) and server state changes; a
# request's log line names the frontend.
grep -F ' fe_app' "$TMP/haproxy.log" >"$TMP/haproxy-anomalies.log" || true
if [ -s "$TMP/haproxy-anomalies.log" ]; then
    log "HAProxy logged $(wc -l <"$TMP/haproxy-anomalies.log") anomalous requests (errors, retries, redispatches):"
    head -n 40 "$TMP/haproxy-anomalies.log" | sed 's/^/    /'
    problems+=("HAProxy logged $(wc -l <"$TMP/haproxy-anomalies.log") anomalous requests")
fi

if [ ${#problems[@]} -gt 0 ]; then
    for p in "${problems[@]}"; do log "FAIL: $p"; done
    exit 1
fi
FAILED=0
log "ok"

#!/usr/bin/env bash
# Throughput/latency benchmark for `bazaar up` against a native hyper server (docs/benchmarks.md).
#
# In one run, with identical wrk settings, it measures:
#   (a) trivial  - `bazaar up` + spin-probe `?probe=env&name=BAZAAR_BENCH_UNSET`
#                  -> 200, content-type: application/json, body {"value":null}
#   (b) kv-read  - `bazaar up` + spin-probe `?probe=kv&op=get` on the default (SQLite) store
#                  -> 200, content-type: application/json, body {"ok":"bench-value"}
#   (c) native   - host/examples/native_baseline.rs (hyper 1 + tokio), same bytes as (a)
# and prints a markdown table. Before measuring it checks that (a) and (c) answer byte-identical
# responses (status line, headers except `date`, chunked body) and that (b) reads the seeded value.
#
# Usage: scripts/bench.sh            (from anywhere; run as root or with sudo to install wrk)
# Knobs (environment): BENCH_THREADS=2 BENCH_CONNECTIONS=32 BENCH_DURATION=10s BENCH_WARMUP=3s
#                      BENCH_BAZAAR_PORT=18181 BENCH_NATIVE_PORT=18182 CARGO_TARGET_DIR=<root>/target
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
THREADS="${BENCH_THREADS:-2}"
CONNECTIONS="${BENCH_CONNECTIONS:-32}"
DURATION="${BENCH_DURATION:-10s}"
WARMUP="${BENCH_WARMUP:-3s}"
BAZAAR_PORT="${BENCH_BAZAAR_PORT:-18181}"
NATIVE_PORT="${BENCH_NATIVE_PORT:-18182}"
HOST=127.0.0.1
KV_KEY=bench-key
KV_VALUE=bench-value

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }

# --- load tool ---------------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    log "wrk not found; installing it from the Debian archive (apt-get install wrk)"
    command -v apt-get >/dev/null 2>&1 || die "wrk is missing and apt-get is unavailable; install wrk first"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
command -v curl >/dev/null 2>&1 || die "curl is required"

# --- build -------------------------------------------------------------------------------------
cd "$ROOT"
log "building release bazaar, the native baseline and the spin-probe component"
# Separate invocations: building the example unifies dev-dependency features, and the benchmarked
# `bazaar` should be exactly what `cargo build --release -p bazaar-host` produces.
cargo build --release -p bazaar-host --bin bazaar
cargo build --release -p bazaar-host --example native_baseline
cargo build --release --target wasm32-wasip2 -p spin-probe
BAZAAR="$TARGET_DIR/release/bazaar"
NATIVE="$TARGET_DIR/release/examples/native_baseline"
PROBE="$TARGET_DIR/wasm32-wasip2/release/spin_probe.wasm"
for f in "$BAZAAR" "$NATIVE" "$PROBE"; do [ -f "$f" ] || die "build output missing: $f"; done

# --- processes and cleanup ---------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bazaar-bench.XXXXXX")"
PIDS=()
cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { curl -s -o /dev/null --max-time 1 "http://$HOST:$1/" ; }
port_busy "$BAZAAR_PORT" && die "port $BAZAAR_PORT is already in use (set BENCH_BAZAAR_PORT)"
port_busy "$NATIVE_PORT" && die "port $NATIVE_PORT is already in use (set BENCH_NATIVE_PORT)"

# wait_for_line FILE PATTERN PID WHAT: bounded wait (120 s) for a readiness line.
wait_for_line() {
    local i
    for i in $(seq 1 1200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { cat "$1" "$1.err" >&2 2>/dev/null || true; die "$4 exited before it was ready"; }
        sleep 0.1
    done
    die "$4 not ready after 120 s"
}

cat >"$WORK/spin.toml" <<EOF
spin_manifest_version = 2

[application]
name = "bazaar-bench"

[[trigger.http]]
route = "/trivial"
component = "trivial"

[[trigger.http]]
route = "/kv"
component = "kv"

[component.trivial]
source = "$PROBE"

[component.kv]
source = "$PROBE"
key_value_stores = ["default"]
EOF

log "starting bazaar up on $HOST:$BAZAAR_PORT"
RUST_LOG=warn "$BAZAAR" up -f "$WORK/spin.toml" --listen "$HOST:$BAZAAR_PORT" --state-dir "$WORK/state" \
    --quiet --drain-timeout-secs 2 >"$WORK/bazaar.out" 2>"$WORK/bazaar.out.err" &
PIDS+=("$!")
wait_for_line "$WORK/bazaar.out" '^Serving http://' "${PIDS[-1]}" "bazaar up"

log "starting native baseline on $HOST:$NATIVE_PORT"
"$NATIVE" "$HOST:$NATIVE_PORT" >"$WORK/native.out" 2>"$WORK/native.out.err" &
PIDS+=("$!")
wait_for_line "$WORK/native.out" '^Listening on http://' "${PIDS[-1]}" "native baseline"

TRIVIAL_URL="http://$HOST:$BAZAAR_PORT/trivial?probe=env&name=BAZAAR_BENCH_UNSET"
KV_URL="http://$HOST:$BAZAAR_PORT/kv?probe=kv&store=default&op=get&key=$KV_KEY"
NATIVE_URL="http://$HOST:$NATIVE_PORT/trivial?probe=env&name=BAZAAR_BENCH_UNSET"

# --- correctness checks before measuring -------------------------------------------------------
seeded="$(curl -s --max-time 10 "http://$HOST:$BAZAAR_PORT/kv?probe=kv&store=default&op=set&key=$KV_KEY&value=$KV_VALUE")"
[ "$seeded" = '{"ok":null}' ] || die "seeding the key-value store failed: $seeded"
read_back="$(curl -s --max-time 10 "$KV_URL")"
[ "$read_back" = "{\"ok\":\"$KV_VALUE\"}" ] || die "key-value read answered: $read_back"

# Raw wire bytes (chunk framing included), minus the `date` header which differs by clock.
raw() { curl -s --raw --max-time 10 -D - "$1" | tr -d '\r' | grep -vi '^date:'; }
raw "$TRIVIAL_URL" >"$WORK/trivial.raw"
raw "$NATIVE_URL" >"$WORK/native.raw"
if ! cmp -s "$WORK/trivial.raw" "$WORK/native.raw"; then
    diff "$WORK/trivial.raw" "$WORK/native.raw" >&2 || true
    die "trivial component and native baseline do not answer the same bytes"
fi
grep -q '^HTTP/1.1 200' "$WORK/trivial.raw" || die "trivial component did not answer 200"
log "(a) and (c) answer byte-identical responses (date header aside):"
sed 's/^/      /' "$WORK/trivial.raw" >&2; echo >&2

# --- measure -----------------------------------------------------------------------------------
NAMES=("(a) trivial component, bazaar up" "(b) key-value read component, bazaar up" "(c) native hyper server")
URLS=("$TRIVIAL_URL" "$KV_URL" "$NATIVE_URL")

for i in 0 1 2; do
    log "warm-up ${NAMES[$i]} ($WARMUP)"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" "${URLS[$i]}" >/dev/null
done

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
for i in 0 1 2; do
    log "measuring ${NAMES[$i]}: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "${URLS[$i]}" | tee "$WORK/wrk.$i" >&2
done
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

# parse FILE -> "rps p50_ms p99_ms requests errors"
parse() {
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/)  return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        $1 == "50%"               { p50 = ms($2) }
        $1 == "99%"               { p99 = ms($2) }
        $1 == "Requests/sec:"     { rps = $2 }
        $2 == "requests" && $3 == "in" { reqs = $1 }
        /Non-2xx or 3xx responses:/ { errs += $NF }
        /Socket errors:/ {
            for (f = 1; f <= NF; f++) if ($f ~ /^[0-9]+,?$/) { n = $f; sub(/,/, "", n); errs += n }
        }
        END { printf "%s %.3f %.3f %s %d\n", rps, p50, p99, reqs, errs }
    ' "$1"
}

read -r native_rps _ <<<"$(parse "$WORK/wrk.2")"
echo
echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)), shared by server and load generator; load average before/after: $LOAD_BEFORE / $LOAD_AFTER"
echo "Load: $(wrk --version 2>&1 | head -n1 | awk '{print $1, $2}'), wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency (after a $WARMUP warm-up per target), HTTP/1.1 keep-alive over 127.0.0.1"
echo
echo "| Target | Requests/s | p50 latency | p99 latency | Requests | Errors | Throughput vs native |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for i in 0 1 2; do
    read -r rps p50 p99 reqs errs <<<"$(parse "$WORK/wrk.$i")"
    ratio="$(awk -v a="$rps" -v b="$native_rps" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "?" }')"
    printf '| %s | %.0f | %.2f ms | %.2f ms | %s | %s | %s |\n' "${NAMES[$i]}" "$rps" "$p50" "$p99" "$reqs" "$errs" "$ratio"
done

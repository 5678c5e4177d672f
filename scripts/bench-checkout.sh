#!/usr/bin/env bash
# Checkout benchmark (docs/benchmarks.md, "Checkout"): the whole shop under `bazaar up` with the
# payment host and its card sandbox, N concurrent customers through cart -> checkout, next to
# baselines measured in the same run (`GET /health/live` through the gateway, `GET /api/v1/cart`).
#
# It builds `bazaar`, every component of spin.toml and the payment plugins, writes a temporary
# app directory (the repository's spin.toml and runtime-config.toml, payments.toml on ports of
# its own), starts `bazaar up` there and runs the load client host/examples/bench_checkout.rs,
# which prints a markdown table (throughput, p50/p95/p99) and fails on any unexpected answer.
#
# Usage: scripts/bench-checkout.sh
# Knobs (environment): BENCH_CUSTOMERS=16 BENCH_ROUNDS=10 BENCH_BASELINE_REQUESTS=50
#   BENCH_PROFILE=release|dev (how `bazaar` and the client are built; dev = the workspace's dev
#   profile, whose dependencies - wasmtime, cranelift, hyper - are built at opt-level 2)
#   BENCH_PORT=18281 BENCH_PAYMENTS_PORT=18282 BENCH_SIMULATOR_PORT=18283
#   CARGO_TARGET_DIR=<root>/target
# Everything listens on 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
CUSTOMERS="${BENCH_CUSTOMERS:-16}"
ROUNDS="${BENCH_ROUNDS:-10}"
BASELINE_REQUESTS="${BENCH_BASELINE_REQUESTS:-50}"
PROFILE="${BENCH_PROFILE:-release}"
PORT="${BENCH_PORT:-18281}"
PAYMENTS_PORT="${BENCH_PAYMENTS_PORT:-18282}"
SIMULATOR_PORT="${BENCH_SIMULATOR_PORT:-18283}"
HOST=127.0.0.1

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench-checkout.sh: error: %s\n' "$*" >&2; exit 1; }

command -v curl >/dev/null 2>&1 || die "curl is required"
command -v python3 >/dev/null 2>&1 || die "python3 is required (payments.toml rewrite, key generation)"
case "$PROFILE" in
    release) PROFILE_FLAG=(--release); PROFILE_DIR=release ;;
    dev) PROFILE_FLAG=(); PROFILE_DIR=debug ;;
    *) die "BENCH_PROFILE must be release or dev" ;;
esac

# --- build -------------------------------------------------------------------------------------
cd "$ROOT"
# Every crate spin.toml, payments.toml and the payment core's manifest point at
# (target/wasm32-wasip2/release/<crate>.wasm).
mapfile -t WASM_CRATES < <(grep -ho 'target/wasm32-wasip2/release/[a-z0-9_]*\.wasm' spin.toml payments.toml payments/spin.toml \
    | sed -e 's#.*/##' -e 's#\.wasm$##' -e 's#_#-#g' | sort -u)
[ "${#WASM_CRATES[@]}" -gt 0 ] || die "no components found in spin.toml"
log "building ${WASM_CRATES[*]} (wasm32-wasip2, release)"
cargo build --release --target wasm32-wasip2 $(printf -- '-p %s ' "${WASM_CRATES[@]}")
log "building bazaar and the load client ($PROFILE profile)"
cargo build "${PROFILE_FLAG[@]}" -p bazaar-host --bin bazaar
cargo build "${PROFILE_FLAG[@]}" -p bazaar-host --example bench_checkout
BAZAAR="$TARGET_DIR/$PROFILE_DIR/bazaar"
CLIENT="$TARGET_DIR/$PROFILE_DIR/examples/bench_checkout"
WASM_DIR="$TARGET_DIR/wasm32-wasip2/release"
for f in "$BAZAAR" "$CLIENT"; do [ -f "$f" ] || die "build output missing: $f"; done

# --- app directory -----------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bazaar-bench-checkout.XXXXXX")"
PID=""
cleanup() {
    local i
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        for i in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { curl -s -o /dev/null --max-time 1 "http://$HOST:$1/"; }
for p in "$PORT" "$PAYMENTS_PORT" "$SIMULATOR_PORT"; do
    port_busy "$p" && die "port $p is already in use (see the BENCH_*PORT knobs)"
done

sed "s#target/wasm32-wasip2/release/#$WASM_DIR/#g" spin.toml >"$WORK/spin.toml"
cp runtime-config.toml "$WORK/runtime-config.toml"
# payments.toml on this run's ports with the built plugins, and the payment core's manifest
# with the built core and the fraud thresholds at the core's maximum: the benchmark sends many
# checkouts from one address with the same test card, which velocity scoring rightly blocks; it
# measures checkout, not fraud screening (as the checkout test does).
mkdir -p "$WORK/payments"
python3 - "$ROOT" "$WORK" "$PAYMENTS_PORT" "$SIMULATOR_PORT" "$WASM_DIR" <<'EOF'
import re, sys
root, work, payments_port, simulator_port, wasm_dir = sys.argv[1:]
text = open(f"{root}/payments.toml").read()
text = text.replace("127.0.0.1:3100", f"127.0.0.1:{payments_port}")
text = text.replace("127.0.0.1:3101", f"127.0.0.1:{simulator_port}")
text = text.replace("target/wasm32-wasip2/release/", wasm_dir + "/")
open(f"{work}/payments.toml", "w").write(text)
core = open(f"{root}/payments/spin.toml").read()
core = core.replace("../target/wasm32-wasip2/release/", wasm_dir + "/")
core, n1 = re.subn(r'(?m)^fraud_review_at = \{ default = .*$', 'fraud_review_at = { default = "9999" }', core)
core, n2 = re.subn(r'(?m)^fraud_block_at = \{ default = .*$', 'fraud_block_at = { default = "10000" }', core)
if (n1, n2) != (1, 1):
    sys.exit("payments/spin.toml: fraud_review_at/fraud_block_at not found")
open(f"{work}/payments/spin.toml", "w").write(core)
EOF
# A fresh signing key for this run's access tokens (the client mints them).
SEED="$(python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())')"

# --- start -------------------------------------------------------------------------------------
log "starting bazaar up (shop + payment host) on $HOST:$PORT"
(
    cd "$WORK"
    exec env RUST_LOG=warn "$BAZAAR" up -f "$WORK/spin.toml" --listen "$HOST:$PORT" \
        --runtime-config-file runtime-config.toml --quiet --drain-timeout-secs 2 \
        --variable "jwt_signing_keys=bench=$SEED" \
        --variable "payment_host_url=http://$HOST:$PAYMENTS_PORT" \
        --variable "rate_limit_per_minute=0"
) >"$WORK/bazaar.out" 2>"$WORK/bazaar.err" &
PID="$!"
for i in $(seq 1 1200); do
    grep -q '^Serving http://' "$WORK/bazaar.out" 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/bazaar.out" "$WORK/bazaar.err" >&2; die "bazaar up exited"; }
    [ "$i" -lt 1200 ] || die "bazaar up not serving after 120 s"
    sleep 0.1
done
for i in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$HOST:$PORT/health/ready")" = 200 ] && break
    [ "$i" -lt 300 ] || { curl -s "http://$HOST:$PORT/health/ready" >&2; die "the shop is not ready after 30 s"; }
    sleep 0.1
done

# --- measure -----------------------------------------------------------------------------------
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
log "running $CUSTOMERS customers x $ROUNDS checkouts"
"$CLIENT" --base "http://$HOST:$PORT" --seed-b64 "$SEED" --customers "$CUSTOMERS" \
    --rounds "$ROUNDS" --baseline-requests "$BASELINE_REQUESTS" >"$WORK/result.md" \
    || { tail -n 40 "$WORK/bazaar.err" >&2; die "the load client failed"; }
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"

echo
echo "Run: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)'), bazaar built with the $PROFILE profile"
echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null)), shared by the shop, the payment host and the load client; load average before/after: $LOAD_BEFORE / $LOAD_AFTER"
echo
cat "$WORK/result.md"

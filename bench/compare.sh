#!/usr/bin/env bash
# Herald against RabbitMQ's Web-STOMP plugin, back to back in one run, with
# the same client (herald-bench) and the same publish path (RabbitMQ).
#
#   bench/compare.sh            all scenarios
#   SCENARIOS="a b" bench/compare.sh
#   SCENARIOS="d" APPEND=1 bench/compare.sh   (rerun d into the same table)
#
# Scenarios (the issue's sizes; Web-STOMP's smaller where noted, because at
# ~20,000 deliveries/s the full size would take minutes; its rates and
# percentiles are still comparable, and a shorter run flatters its latency):
#   a   1,000 subscribers of one topic, 1,000 messages as fast as possible
#       (Web-STOMP: 100 messages)
#   b   1,000 subscribers, 200 msg/s for 10 s (Web-STOMP: for 2 s)
#   c   10,000 subscribers, 100 messages at 50/s (Web-STOMP: 20 messages);
#       c1k: Herald at 1,000 subscribers and 500 msg/s, the same deliveries/s
#   d   10,000 idle subscribed connections held 10 s, fresh process
#       (memory, connect rate; Web-STOMP's node is not fresh: RSS delta)
#   e   1,000 topics x 10 subscribers, 2,000 publishes to random topics
#   f   a full node: 19,000 subscribers on one Herald, 10 broadcasts
#   g   two Herald nodes on one RabbitMQ, 500 subscribers each, 1,000 messages
#
# For its own runs the script raises Herald's per-IP handshake rate and
# connection limits, the per-session rate limit and the outbound queue (so a
# burst of 1,000 messages is not a slow consumer); those are load-test
# settings, not production ones. Publishes go through RabbitMQ for both:
# Herald's `herald.topics`, Web-STOMP's `amq.topic`.
#
# It enables rabbitmq_web_stomp itself, and when RabbitMQ's open-file limit
# is too low for 10,000 connections it restarts RabbitMQ with a higher one
# (and says so). Results: one JSON line per run in $OUT/results.jsonl, the
# table in $OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIOS=${SCENARIOS:-"a b c d e f g"}
OUT=${OUT:-/tmp/herald-compare}
TARGET=${CARGO_TARGET_DIR:-target}
AMQP=amqp://guest:guest@127.0.0.1:5672/%2f
mkdir -p "$OUT"
# APPEND=1 adds to the last run's results (to rerun some scenarios).
[ -n "${APPEND:-}" ] || : >"$OUT/results.jsonl"
say() { printf '== %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

say "building herald and herald-bench (release)"
cargo build --release -p herald --bin herald >&2
cargo build --release -p herald-bench >&2
HERALD="$TARGET/release/herald"
BENCH="$TARGET/release/herald-bench"

# --- RabbitMQ and Web-STOMP -------------------------------------------------
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
webstomp_up() { (exec 3<>/dev/tcp/127.0.0.1/15674) 2>/dev/null; }
wait_for() { for _ in $(seq 1 "$2"); do "$1" && return 0; sleep 1; done; return 1; }
start_rabbit() {
  # Debian's wrapper starts it through `su`, which resets the soft open-file
  # limit to 1024: raise it inside the rabbitmq user's own shell instead.
  as_root su rabbitmq -s /bin/sh -c \
    "ulimit -n \$(ulimit -Hn); cd /var/lib/rabbitmq; /usr/lib/rabbitmq/bin/rabbitmq-server -detached"
  wait_for rabbit_up 120 || { echo "RabbitMQ did not come up" >&2; exit 1; }
  as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
}
if ! command -v rabbitmq-server >/dev/null; then
  say "installing rabbitmq-server (Debian's package carries Web-STOMP)"
  as_root apt-get update -qq && as_root apt-get install -y -qq rabbitmq-server >/dev/null
fi
rabbit_up || { say "starting RabbitMQ"; start_rabbit; }
beam() { pgrep -x beam.smp | head -1; }
soft=$(awk '/Max open files/ {print $4}' "/proc/$(beam)/limits")
if [ "$soft" -lt 12000 ]; then
  say "RabbitMQ may open only $soft files: restarting it with its hard limit for 10,000 Web-STOMP connections"
  as_root rabbitmqctl stop >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do [ -z "$(beam)" ] && break; sleep 0.5; done
  start_rabbit
fi
if ! webstomp_up; then
  say "enabling rabbitmq_web_stomp"
  as_root rabbitmq-plugins enable rabbitmq_web_stomp >/dev/null
  wait_for webstomp_up 60 || { echo "Web-STOMP did not open 15674" >&2; exit 1; }
fi
say "RabbitMQ $(beam) ($(awk '/Max open files/ {print $4}' "/proc/$(beam)/limits") files), Web-STOMP on ws://127.0.0.1:15674/ws"

# --- Herald nodes ------------------------------------------------------------
NODES=()
PIDS=()
start_herald() { # start_herald PORT: a fresh node with AMQP on
  local port=$1
  "$HERALD" --listen "127.0.0.1:$port" --amqp-url "$AMQP" \
    --handshake-rate-per-ip 1000000 --max-connections-per-ip 1000000 \
    --max-connections-per-user 1000000 --rate-limit 1000000 \
    --outbound-queue-frames 100000 --outbound-queue-bytes 67108864 \
    >"$OUT/herald-$port.log" 2>&1 &
  PIDS+=($!)
  NODES+=("$port")
  # RabbitMQ may still be closing the last Web-STOMP run's 10,000
  # connections and queues: give it a minute.
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/api/stats" 2>/dev/null | grep -q '"state":"connected"' && return 0
    sleep 0.1
  done
  echo "herald on $port did not connect to RabbitMQ" >&2; exit 1
}
stop_herald() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=(); NODES=()
}
trap stop_herald EXIT

# bench LABEL TARGET ARGS...: TARGET herald-json | herald-stomp | webstomp
bench() {
  local label=$1 target=$2; shift 2
  local args=(run --label "$label" --quiet --json --drain-timeout 60)
  case $target in
    herald-json|herald-stomp)
      local protocol=${target#herald-}
      start_herald 18080
      local urls=(--url ws://127.0.0.1:18080/ws) pids=(--server-pid "${PIDS[0]}")
      if [ "${TWO_NODES:-}" = 1 ]; then
        start_herald 18081
        urls+=(ws://127.0.0.1:18081/ws); pids+=(--server-pid "${PIDS[1]}")
      fi
      args+=("${urls[@]}" --protocol "$protocol" --publish amqp --exchange herald.topics "${pids[@]}")
      ;;
    webstomp)
      args+=(--url ws://127.0.0.1:15674/ws --protocol stomp --stomp-login guest:guest
        --publish amqp --exchange amq.topic --server-pid "$(beam)" --rabbit-pid 0)
      ;;
  esac
  # The scenario's own flags last: a later flag wins (`--publish none`).
  args+=("$@")
  say "$label on $target"
  local line
  line=$("$BENCH" "${args[@]}" | tail -1) || true
  stop_herald
  [ -n "$line" ] || { echo "herald-bench failed in $label on $target" >&2; return 0; }
  echo "{\"scenario\":\"$label\",\"target\":\"$target\",\"report\":$line}" >>"$OUT/results.jsonl"
  sleep 1 # let TIME_WAIT and the other side's teardown settle
}

for s in $SCENARIOS; do
  case $s in
    a)
      for t in herald-json herald-stomp; do bench a $t --subscribers 1000 --messages 1000; done
      bench a webstomp --subscribers 1000 --messages 100 ;;
    b)
      for t in herald-json herald-stomp; do bench b $t --subscribers 1000 --messages 2000 --rate 200; done
      bench b webstomp --subscribers 1000 --messages 400 --rate 200 ;;
    c)
      for t in herald-json herald-stomp; do
        bench c $t --subscribers 10000 --messages 100 --rate 50
        bench c1k $t --subscribers 1000 --messages 1000 --rate 500
      done
      bench c webstomp --subscribers 10000 --messages 20 --rate 50 ;;
    d)
      for t in herald-json herald-stomp webstomp; do
        bench d $t --subscribers 10000 --topics 100 --publish none --hold 10 --settle 2
      done ;;
    e)
      for t in herald-json herald-stomp webstomp; do
        bench e $t --subscribers 10000 --topics 1000 --messages 2000
      done ;;
    f)
      hard=$(ulimit -Hn)
      if [ "$hard" -lt 19500 ]; then
        say "f skipped: the open-file hard limit is $hard, under 19,000 connections plus the process's own"
      else
        bench f herald-json --subscribers 19000 --messages 10 --connect-concurrency 256
      fi ;;
    g)
      for t in herald-json herald-stomp; do TWO_NODES=1 bench g $t --subscribers 1000 --messages 1000; done ;;
  esac
done

python3 - "$OUT/results.jsonl" >"$OUT/table.md" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {(r["scenario"], r["target"]): r["report"] for r in rows}
def f(v, d=0):
    return "-" if v is None else f"{v:,.{d}f}"
def ratio(a, b):
    return "-" if a in (None, 0) or b in (None, 0) else f"{a / b:.2f}x"
metrics = [
    ("deliveries/s", lambda r: r["deliveries_per_s"], 0),
    ("p99 ms", lambda r: r["latency_ms"]["p99"], 1),
    ("server CPU µs/delivery", lambda r: r["server_cpu_us_per_delivery"], 3),
    ("connect+subscribe /s", lambda r: r["connects_per_s"], 0),
    ("server CPU µs/connection", lambda r: r["server_cpu_us_per_connection"], 0),
    ("server KiB/connection", lambda r: r["server_kib_per_connection"], 1),
    ("RabbitMQ CPU µs/delivery", lambda r: r["rabbit_cpu_us_per_delivery"], 3),
]
print("| scenario | measure | Herald JSON | Herald STOMP | Web-STOMP | JSON / Web-STOMP | STOMP / Web-STOMP |")
print("|---|---|---|---|---|---|---|")
for s in sorted({r["scenario"] for r in rows}, key=lambda x: (x[0], len(x))):
    hj, hs, ws = by.get((s, "herald-json")), by.get((s, "herald-stomp")), by.get((s, "webstomp"))
    for name, get, d in metrics:
        vals = [get(r) if r else None for r in (hj, hs, ws)]
        if all(v is None for v in vals):
            continue
        if s == "d" and name in ("deliveries/s", "p99 ms", "server CPU µs/delivery", "RabbitMQ CPU µs/delivery"):
            continue
        print(f"| {s} | {name} | {f(vals[0], d)} | {f(vals[1], d)} | {f(vals[2], d)} | {ratio(vals[0], vals[2])} | {ratio(vals[1], vals[2])} |")
    checks = []
    for label, r in (("JSON", hj), ("STOMP", hs), ("Web-STOMP", ws)):
        if r:
            checks.append(f"{label}: {r['received']}/{r['expected']} lost {r['lost']} dup {r['duplicated']} ooo {r['out_of_order']} err {r['errors']}")
    print(f"| {s} | delivered | {' ; '.join(checks)} | | | | |")
    for label, r in (("JSON", hj), ("STOMP", hs)):
        if r and len(r.get("server_cpu_us_per_delivery_by_node") or []) > 1:
            print(f"| {s} | {label} CPU µs/delivery by node | {', '.join(f'{v:.3f}' for v in r['server_cpu_us_per_delivery_by_node'])} | | | | |")
EOF
cat "$OUT/table.md"

#!/usr/bin/env bash
# The txmsg workload against Redis Streams and against edda, in one run on
# this machine, then the edda/redis ratios (tests/bench/peers/README.md).
#
#   tests/bench/peers/redis.sh [--count N] [--window W] [--size B]
#                              [--latency-count N] [--latency-rate R]
#                              [--sync-count N] [--no-door] [edda-only options]
#
# The options above go to both systems; any other option (e.g. --partitions,
# --mode, --node-set) goes to `edda bench txmsg` only. edda runs its phases
# over the node port (CAF) and then over the client door (gRPC, --door):
# both are set beside Redis; --no-door skips the door.
# Environment: BUILD_DIR (default build), SKIP_BUILD=1 (use what is built),
# CSV_OUT=FILE (keep the joined CSV), BUILD_TYPE and JOBS (as scripts/build).
set -euo pipefail
cd "$(dirname "$0")/../../.."

build_dir=${BUILD_DIR:-build}
peer="$build_dir/tests/bench/peers/redis_txmsg"
edda="$build_dir/runtime/cli/edda"

# -- split the options ---------------------------------------------------------
shared=() edda_only=() door=(--door)
while (($#)); do
  case "$1" in
    --no-door)
      door=(); shift ;;
    --count|--window|--size|--latency-count|--latency-rate|--sync-count)
      (($# >= 2)) || { echo "redis.sh: $1 needs a value" >&2; exit 2; }
      shared+=("$1" "$2"); shift 2 ;;
    --help|-h)
      sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *)
      edda_only+=("$1"); shift ;;
  esac
done

# -- packages (only what is missing) -------------------------------------------
pkgs=(redis-server libhiredis-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "redis.sh: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# -- build (cmake re-detects hiredis on every configure) -----------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  if [ "$build_dir" = build ]; then
    scripts/build || echo "redis.sh: scripts/build failed; building the Redis peer alone" >&2
  else
    scripts/setup
    cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
    cmake --build "$build_dir" -j"${JOBS:-2}" \
      || echo "redis.sh: the build failed; building the Redis peer alone" >&2
  fi
  if [ ! -x "$peer" ]; then
    # A cache from before hiredis was installed: forget the failed check.
    cmake -U 'HIREDIS*' -U __pkg_config_checked_HIREDIS -S . -B "$build_dir" >/dev/null
    cmake --build "$build_dir" --target redis_txmsg -j"${JOBS:-2}"
  fi
fi
if [ ! -x "$peer" ]; then
  echo "redis.sh: $peer is not built (is hiredis visible to pkg-config? pkg-config --modversion hiredis)" >&2
  exit 1
fi

# -- a private Redis server ----------------------------------------------------
tmp=$(mktemp -d)
redis_pid=""
stop_redis() {
  if [ -n "$redis_pid" ]; then
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    redis_pid=""
  fi
}
cleanup() {
  stop_redis
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# true when something listens on TCP port $1 (v4 or v6)
port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  grep -qE "^ *[0-9]+: [0-9A-F]+:$hex [0-9A-F]+:[0-9A-F]+ 0A " /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

port=""
for attempt in 1 2 3 4 5; do
  p=$((20000 + RANDOM % 10000))
  port_in_use "$p" && continue
  redis-server --port "$p" --bind 127.0.0.1 --dir "$tmp" \
    --appendonly yes --appendfsync always --auto-aof-rewrite-percentage 0 \
    --save '' --daemonize no >"$tmp/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 100); do
    if redis-cli -p "$p" ping 2>/dev/null | grep -q PONG; then
      port=$p
      break
    fi
    kill -0 "$redis_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] && break
  stop_redis # lost a race for the port, or did not start: try another
done
if [ -z "$port" ]; then
  echo "redis.sh: redis-server did not start; its log:" >&2
  tail -n 20 "$tmp/redis.log" >&2 || true
  exit 1
fi

cfg() { redis-cli -p "$port" config get "$1" | sed -n 2p; }
version=$(redis-cli -p "$port" info server | tr -d '\r' | sed -n 's/^redis_version://p')
echo "redis $version on 127.0.0.1:$port (pid $redis_pid): appendonly $(cfg appendonly)," \
     "appendfsync $(cfg appendfsync), save '$(cfg save)'," \
     "auto-aof-rewrite-percentage $(cfg auto-aof-rewrite-percentage), dir $tmp;" \
     "$(nproc) cores"

csv="$tmp/results.csv"
status=0
"$peer" --port "$port" --csv "$csv" --disk-floor-dir "$tmp/floor" \
  ${shared[@]+"${shared[@]}"} || status=$?
stop_redis # edda runs on a quiet machine, as Redis did

# -- edda ---------------------------------------------------------------------
echo
if [ -x "$edda" ] && "$edda" bench txmsg --help >/dev/null 2>&1; then
  "$edda" bench txmsg --csv "$csv" ${shared[@]+"${shared[@]}"} \
    ${door[@]+"${door[@]}"} ${edda_only[@]+"${edda_only[@]}"} || status=$?
else
  echo "note: $edda is not built or has no 'bench txmsg' yet: edda skipped, no ratios"
fi

# -- ratios ---------------------------------------------------------------------
echo
if [ -f "$csv" ]; then
  awk -F, '
    function ratio(a, b) {
      if (a == "" || b == "" || a + 0 == 0 || b + 0 == 0) return "n/a"
      return sprintf("%.2f", a / b)
    }
    function cell(sys, mode, phase, col,    k, r) {
      k = sys "," mode "," phase
      r = ratio(v[k, col], v["redis,plain," phase, col])
      if (r != "n/a" && (once[k] != "yes" || once["redis,plain," phase] != "yes"))
        r = r "*"
      if (r != "n/a" && once[k] != "yes") bad = 1
      if (r != "n/a" && once["redis,plain," phase] != "yes") bad = 1
      return r
    }
    function row(label, phase, col) {
      printf "  %-34s %12s %20s", label, cell("edda", "plain", phase, col),
             cell("edda", "transactional", phase, col)
      if (seen["edda-door"])
        printf " %12s %20s", cell("edda-door", "plain", phase, col),
               cell("edda-door", "transactional", phase, col)
      printf "\n"
    }
    NR > 1 {
      k = $1 "," $2 "," $3
      v[k, 5] = $5; v[k, 6] = $6; v[k, 7] = $7; once[k] = $9
      seen[$1] = 1
    }
    END {
      if (!seen["edda"] || !seen["redis"]) {
        print "no ratios: the CSV lacks " (seen["redis"] ? "edda" : "redis") " rows"
        exit
      }
      print "edda / redis (Redis plain is the baseline for both edda modes;"
      print "msg/s above 1 = edda faster, ms below 1 = edda faster):"
      printf "  %-34s %12s %20s", "", "edda plain", "edda transactional"
      if (seen["edda-door"])
        printf " %12s %20s", "door plain", "door transactional"
      printf "\n"
      row("throughput producer msg/s", "throughput", 5)
      row("throughput end-to-end msg/s", "throughput", 6)
      row("sync p50 send to durable ack", "sync", 7)
      row("latency p50 send to receive", "latency", 7)
      if (bad) print "  * a phase was not exactly once (see its line above)"
      if (seen["edda-door"])
        print "  (edda: the node port, CAF; door: the client door, gRPC; same node, same run)"
    }' "$csv"
  if [ -n "${CSV_OUT:-}" ]; then
    cp "$csv" "$CSV_OUT"
    echo "CSV: $CSV_OUT"
  fi
else
  echo "no results (no CSV written)"
fi
exit "$status"

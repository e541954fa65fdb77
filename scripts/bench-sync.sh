#!/usr/bin/env bash
# Benchmark: uploads against a local cloud (`cloudattach cloud serve` on loopback).
#   full sync (apply) of N devices, syncs with nothing changed (without and with the line index),
#   delta syncs after 0.1%, 1% and 10% of the devices change, the read floor, a full resend,
#   apply under faults, and the cloud's own ingest rate measured in the same run.
# Prints records per second and peak memory; asserts nothing.
#
#   scripts/bench-sync.sh [SIZES...]      # default: 100000 1000000
#   CLOUDATTACH_BIN=/path/to/cloudattach scripts/bench-sync.sh ...   # a given build (before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cloudattach-cloud --example ingest_bench >&2
if [ -n "${CLOUDATTACH_BIN:-}" ]; then
  bin="$CLOUDATTACH_BIN"
else
  cargo build --release -p cloudattach-cli >&2
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/cloudattach"
fi
work=$(mktemp -d)
# start_cloud runs in a command substitution (a subshell): pids go through a file.
cleanup() { [ -f "$work/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done < "$work/pids"; rm -rf "$work"; }
trap cleanup EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cloud_pid=
start_cloud() { # name, extra flags... (sets cloud_pid; prints the base URL)
  local name=$1; shift
  local port; port=$(free_port)
  "$bin" cloud serve --addr "127.0.0.1:$port" --data "$work/$name" --auto-approve admin@contoso.example \
    --device-code-interval-secs 1 "$@" >"$work/$name.log" 2>&1 &
  echo $! >> "$work/pids"
  echo $! > "$work/cloud.pid"
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/contoso.example/v2.0/.well-known/openid-configuration" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "http://127.0.0.1:$port"
}

# CPU seconds the cloud process has used so far.
cloud_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$(cat "$work/cloud.pid")/stat"; }

# run LABEL RECORDS-JSON-FILTER -- cmd…: wall time, peak RSS, records/s from the JSON output,
# and CPU time per record of the client and of the cloud (both share this machine's cores).
run() {
  local label=$1 jq_sum=$2; shift 2
  local c0; c0=$(cloud_cpu)
  /usr/bin/time -f '%e %M %U %S' -o "$work/t" "$@" >"$work/out.json" 2>"$work/err" || { tail -5 "$work/err"; return 1; }
  local c1; c1=$(cloud_cpu)
  read -r secs kib usr sys < "$work/t"
  local records; records=$(python3 -c "import json,sys; d=json.load(open('$work/out.json')); print($jq_sum)")
  printf '%-38s %9s records %7.2f s %9.0f rec/s %7.1f MiB  ' \
    "$label" "$records" "$secs" "$(echo "$records/$secs" | bc -l)" "$(echo "$kib/1024" | bc -l)"
  if [ "$records" -gt 0 ]; then
    printf 'cpu/record: client %5.2f us, cloud %5.2f us\n' \
      "$(echo "($usr+$sys)*1000000/$records" | bc -l)" "$(echo "($c1-$c0)*1000000/$records" | bc -l)"
  else # nothing sent: the CPU seconds themselves
    printf 'cpu: client %5.2f s, cloud %5.2f s\n' "$(echo "$usr+$sys" | bc -l)" "$(echo "$c1-$c0" | bc -l)"
  fi
}

echo "== the cloud's own ingest rate (batches of 5,000, in-process, no HTTP)"
"${CARGO_TARGET_DIR:-$PWD/target}/release/examples/ingest_bench" 2>&1 | tail -n 3

for n in "${sizes[@]}"; do
  echo "== $n devices"
  base=$(start_cloud "cloud-$n")
  dir="$work/site-$n"; mkdir -p "$dir"
  "$bin" site generate --devices "$n" --seed 1 --out "$dir/site" 2>/dev/null
  cat > "$dir/attach.toml" <<TOML
[cloud]
endpoint = "$base"
TOML
  sum_steps='sum(s["counts"].get("sent",0) for s in d["steps"])'
  sum_sync='sum(p["sent"] for p in d["plugins"])'
  run "full sync (apply, 4 channels)" "$sum_steps" "$bin" --config "$dir/attach.toml" --output json apply --yes
  # The first sync after apply reads every line and leaves the line index for the next deltas.
  run "sync, nothing changed (no index yet)" "$sum_sync" "$bin" --config "$dir/attach.toml" --output json sync
  run "sync, nothing changed" "$sum_sync" "$bin" --config "$dir/attach.toml" --output json sync
  for step in 1000:0.1% 100:1% 10:10%; do
    every=${step%%:*}; share=${step#*:}
    python3 - "$dir/site/devices.jsonl" "$every" <<'PY'
import json, sys
p, every = sys.argv[1], int(sys.argv[2])
lines = open(p).read().splitlines()
for i in range(0, len(lines), every):          # every N-th device changes; the others keep their bytes
    d = json.loads(lines[i]); d["client_active"] = not d["client_active"]; lines[i] = json.dumps(d)
open(p, "w").write("\n".join(lines) + "\n")
PY
    run "delta sync after $share changed" "$sum_sync" "$bin" --config "$dir/attach.toml" --output json sync
  done
  /usr/bin/time -f '%e' -o "$work/t" wc -l "$dir/site/devices.jsonl" > /dev/null  # reads every byte (cat to /dev/null may not)
  printf '%-38s %7.2f s (%s MiB from the page cache)\n' "floor: read devices.jsonl" "$(cat "$work/t")" \
    "$(( $(stat -c %s "$dir/site/devices.jsonl") / 1048576 ))"
  run "full resend (sync --full)" "$sum_sync" "$bin" --config "$dir/attach.toml" --output json sync --full
done

n=${sizes[0]}
echo "== apply under faults ($n devices: 10% 429 with Retry-After, 10% 429 without, 10% 5xx, 5% drops)"
base=$(start_cloud "faulty" --fault-429 0.1 --fault-429-bare 0.1 --fault-5xx 0.1 --fault-drop 0.05 --fault-seed 7)
dir="$work/faulty"; mkdir -p "$dir"
"$bin" site generate --devices "$n" --seed 1 --out "$dir/site" 2>/dev/null
printf '[cloud]\nendpoint = "%s"\n' "$base" > "$dir/attach.toml"
run "full sync under faults" 'sum(s["counts"].get("sent",0) for s in d["steps"])' "$bin" --config "$dir/attach.toml" --output json apply --yes
curl -fs "$base/_emulator/stats"; echo

#!/usr/bin/env bash
# Benchmark: uploads against local clouds (`cloudattach cloud serve` on loopback), each figure
# beside its yardsticks, measured in the same run. Per size:
#   - the first full sync (`apply`, four channels; the cloud keeps every batch it accepts),
#   - `sync` with nothing changed (without and with the line index), deltas after 0.1%, 1% and
#     10% of the devices changed, `sync --full`, `check` and `plan`,
#   - the floors: reading `devices.jsonl`, and reading it while hashing every line (xxh3),
#   - the cloud's own ingest of the same batches: the product's captured batches replayed by a
#     minimal client (`cloud/examples/replay.rs`) into an attached cloud without records, then
#     again into that cloud (which has them), and tenant attach's batches alone,
#   - the script an administrator would write (`scripts/baseline-upload.py`: Python, `requests`,
#     tenant attach's records in JSON batches of 1,000, one request at a time),
# then, for the largest size, `apply` under an Intune-like write window (100 writes per 20 s)
# against the ideal, and `apply` of the smallest size under faults.
# Prints wall time, records/s, peak RSS, CPU per record of client and cloud, and ratios;
# asserts nothing.
#
#   scripts/bench-sync.sh [SIZES...]      # default: 100000 1000000
#   CLOUDATTACH_BIN=/path/to/cloudattach scripts/bench-sync.sh ...   # a given build (before/after)
#   BENCH_SKIP_RATE=1 scripts/bench-sync.sh ...                      # without the write-window run
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cloudattach-cloud --example ingest_bench --example replay >&2
cargo build --release -p cloudattach-core --example line_floor >&2
examples="${CARGO_TARGET_DIR:-$PWD/target}/release/examples"
if [ -n "${CLOUDATTACH_BIN:-}" ]; then
  bin="$CLOUDATTACH_BIN"
else
  cargo build --release -p cloudattach-cli >&2
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/cloudattach"
fi
python3 -c 'import requests' 2>/dev/null || { echo "the baseline needs python3-requests (apt-get install -y python3-requests)" >&2; exit 2; }
work=$(mktemp -d)
# start_cloud runs in a command substitution (a subshell): pids go through files.
cleanup() { [ -f "$work/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done < "$work/pids"; rm -rf "$work"; }
trap cleanup EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_cloud() { # name, extra flags... (prints the base URL; the pid is in $work/<name>.pid)
  local name=$1; shift            # PORT=… restarts a cloud where its sites expect it
  local port; port=${PORT:-$(free_port)}
  "$bin" cloud serve --addr "127.0.0.1:$port" --data "$work/$name" --auto-approve admin@contoso.example \
    --device-code-interval-secs 1 "$@" >"$work/$name.log" 2>&1 &
  echo $! >> "$work/pids"
  echo $! > "$work/$name.pid"
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/contoso.example/v2.0/.well-known/openid-configuration" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "http://127.0.0.1:$port"
}
stop_cloud() {
  local pid; pid=$(cat "$work/$1.pid")
  kill "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
# The cloud whose CPU the next runs count.
measure() { cp "$work/$1.pid" "$work/measured.pid"; }

# CPU seconds the measured cloud process has used so far.
cloud_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$(cat "$work/measured.pid")/stat"; }

declare -A secs_of rate_of
# run LABEL RECORDS-PYTHON-EXPRESSION -- cmd…: wall time, peak RSS, records/s from the JSON
# output (`d`), and CPU time per record of the client and of the cloud (both share the cores).
# A command printing "seconds" in its JSON is timed by its own figure (it leaves out its setup).
run() {
  local label=$1 sum=$2; shift 2
  local c0; c0=$(cloud_cpu)
  /usr/bin/time -f '%e %M %U %S' -o "$work/t" "$@" >"$work/out.json" 2>"$work/err" || { tail -5 "$work/err"; return 1; }
  local c1; c1=$(cloud_cpu)
  local wall kib usr sys; read -r wall kib usr sys < "$work/t"
  local records own
  records=$(python3 -c "import json; d=json.load(open('$work/out.json')); print($sum)")
  own=$(python3 -c "import json; print(json.load(open('$work/out.json')).get('seconds', ''))" 2>/dev/null || true)
  [ -n "$own" ] && wall=$own
  secs_of[$label]=$wall
  rate_of[$label]=$(echo "$records/$wall" | bc -l)
  printf '%-44s %9s records %7.2f s %9.0f rec/s %7.1f MiB  ' \
    "$label" "$records" "$wall" "${rate_of[$label]}" "$(echo "$kib/1024" | bc -l)"
  if [ "$records" -gt 0 ]; then
    printf 'cpu/record: client %5.2f us, cloud %5.2f us\n' \
      "$(echo "($usr+$sys)*1000000/$records" | bc -l)" "$(echo "($c1-$c0)*1000000/$records" | bc -l)"
  else # nothing sent: the CPU seconds themselves
    printf 'cpu: client %5.2f s, cloud %5.2f s\n' "$(echo "$usr+$sys" | bc -l)" "$(echo "$c1-$c0" | bc -l)"
  fi
}
ratio() { # LABEL A B [UNIT-TEXT]: A / B
  printf '  %-52s %6.2fx\n' "$1" "$(echo "$2/$3" | bc -l)"
}

# attach_empty NAME BASE SITE: the site attached to the cloud at BASE with no device (its
# inventory set aside): the hierarchy and its features, no records. Prints the copy's directory.
attach_empty() {
  local name=$1 base=$2 site=$3 dir="$work/$1"
  mkdir -p "$dir/site"
  cp "$site/site.toml" "$site/collections.json" "$dir/site/"
  : > "$dir/site/devices.jsonl"
  printf '[cloud]\nendpoint = "%s"\n' "$base" > "$dir/attach.toml"
  "$bin" --config "$dir/attach.toml" --output json apply --yes >/dev/null 2>"$dir/apply.err" || { tail -5 "$dir/apply.err" >&2; return 1; }
  echo "$dir"
}
# token_and_hierarchy BASE DIR: the app token (client credentials, from the app file apply kept)
# and the hierarchy id, on one line.
token_and_hierarchy() {
  python3 - "$1" "$2"/.cloudattach/app-*.json <<'PY'
import json, sys, urllib.request, urllib.parse
base, cred = sys.argv[1], json.load(open(sys.argv[2]))
form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": cred["client_id"],
                               "client_secret": cred["secret"], "scope": "api://cloudattach/.default"}).encode()
token = json.load(urllib.request.urlopen(f"{base}/{cred['tenant_id']}/oauth2/v2.0/token", form))["access_token"]
req = urllib.request.Request(f"{base}/api/v1/hierarchies", headers={"Authorization": "Bearer " + token})
print(token, json.load(urllib.request.urlopen(req))["value"][0]["hierarchy_id"])
PY
}

echo "== the cloud's own ingest rate (batches of 5,000, in-process, no HTTP)"
"$examples/ingest_bench" 2>&1 | tail -n 3

last_batches=0
for n in "${sizes[@]}"; do
  echo "== $n devices"
  base=$(start_cloud "cloud-$n" --capture-uploads "$work/capture-$n")
  measure "cloud-$n"
  dir="$work/site-$n"; mkdir -p "$dir"
  "$bin" site generate --devices "$n" --seed 1 --out "$dir/site" 2>/dev/null
  printf '[cloud]\nendpoint = "%s"\n' "$base" > "$dir/attach.toml"
  sum_steps='sum(s["counts"].get("sent",0) for s in d["steps"])'
  sum_sync='sum(p["sent"] for p in d["plugins"])'
  run "full sync (apply, 4 channels)" "$sum_steps" "$bin" --config "$dir/attach.toml" --output json apply --yes
  # The upload phase of tenant attach alone: its channel's summary line.
  devices_phase=$(sed -n 's/^devices: .* in \([0-9.]*\)s$/\1/p' "$work/err" | tail -1)
  devices_records=$(python3 -c "import json; d=json.load(open('$work/out.json')); print(sum(s['counts'].get('sent',0) for s in d['steps'] if s.get('plugin')=='tenant-attach' or s.get('id')=='tenant-attach'))")
  # The batches of apply; the cloud then runs on without keeping any (same data, same port).
  stop_cloud "cloud-$n"
  mv "$work/capture-$n" "$work/captured-$n"
  PORT=${base##*:} start_cloud "cloud-$n" >/dev/null
  measure "cloud-$n"
  last_batches=$(find "$work/captured-$n" -type f | wc -l)
  # apply leaves the line index of what it uploaded: the first sync after it is a delta already.
  run "sync, nothing changed (first after apply)" "$sum_sync" "$bin" --config "$dir/attach.toml" --output json sync
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
  run "full resend (sync --full)" "$sum_sync" "$bin" --config "$dir/attach.toml" --output json sync --full
  run "check (5 plugins)" "0" "$bin" --config "$dir/attach.toml" --output json check
  run "plan (5 plugins)" "0" "$bin" --config "$dir/attach.toml" --output json plan
  "$examples/line_floor" "$dir/site/devices.jsonl" > "$work/floor.json"
  read -r floor_read floor_hash < <(python3 -c "import json; d=json.load(open('$work/floor.json')); print(d['read_seconds'], d['read_hash_seconds'])")
  printf '%-44s %7.2f s (%s MiB from the page cache)\n' "floor: read devices.jsonl" "$floor_read" \
    "$(( $(stat -c %s "$dir/site/devices.jsonl") / 1048576 ))"
  printf '%-44s %7.2f s\n' "floor: read and hash every line (xxh3)" "$floor_hash"
  stop_cloud "cloud-$n"

  # The cloud's own ingest of the product's batches, in an attached cloud without records.
  rbase=$(start_cloud "replay-$n"); measure "replay-$n"
  rdir=$(attach_empty "attached-replay-$n" "$rbase" "$dir/site")
  read -r token hid < <(token_and_hierarchy "$rbase" "$rdir")
  # Two channels side by side, 4 requests each: as many in flight as the product's waves.
  CLOUDATTACH_REPLAY_TOKEN=$token run "replay of the captured batches, empty cloud" 'd["records"]' \
    "$examples/replay" "$rbase" "$hid" "$work/captured-$n" --in-flight 8
  CLOUDATTACH_REPLAY_TOKEN=$token run "replay again (the cloud has them)" 'd["records"]' \
    "$examples/replay" "$rbase" "$hid" "$work/captured-$n" --in-flight 8
  stop_cloud "replay-$n"
  dbase=$(start_cloud "replay-devices-$n"); measure "replay-devices-$n"
  ddir=$(attach_empty "attached-devices-$n" "$dbase" "$dir/site")
  read -r token hid < <(token_and_hierarchy "$dbase" "$ddir")
  CLOUDATTACH_REPLAY_TOKEN=$token run "replay of tenant attach's batches" 'd["records"]' \
    "$examples/replay" "$dbase" "$hid" "$work/captured-$n" --channel devices
  stop_cloud "replay-devices-$n"
  pbase=$(start_cloud "baseline-$n"); measure "baseline-$n"
  pdir=$(attach_empty "attached-baseline-$n" "$pbase" "$dir/site")
  run "python + requests, tenant attach, 1,000/request" 'd["records"]' \
    python3 scripts/baseline-upload.py "$pbase" "$dir/site" "$(ls "$pdir"/.cloudattach/app-*.json)"
  stop_cloud "baseline-$n"

  echo "-- ratios ($n devices)"
  ratio "apply (with sign-in and plan) / replay, empty cloud" "${secs_of["full sync (apply, 4 channels)"]}" "${secs_of["replay of the captured batches, empty cloud"]}"
  ratio "sync --full / replay into the cloud that has them" "${secs_of["full resend (sync --full)"]}" "${secs_of["replay again (the cloud has them)"]}"
  if [ -n "$devices_phase" ]; then
    ratio "tenant attach upload phase / replay of its batches" "$devices_phase" "${secs_of["replay of tenant attach's batches"]}"
    ratio "tenant attach in apply, rec/s / python script" "$(echo "$devices_records/$devices_phase" | bc -l)" "${rate_of["python + requests, tenant attach, 1,000/request"]}"
  fi
  ratio "replay of tenant attach's batches / python script (rec/s)" "${rate_of["replay of tenant attach's batches"]}" "${rate_of["python + requests, tenant attach, 1,000/request"]}"
  for l in "sync, nothing changed" "delta sync after 0.1% changed" "delta sync after 1% changed" "delta sync after 10% changed"; do
    ratio "$l / sync --full" "${secs_of[$l]}" "${secs_of["full resend (sync --full)"]}"
  done
  for l in "sync, nothing changed" "delta sync after 1% changed" "check (5 plugins)" "plan (5 plugins)"; do
    ratio "$l / read+hash floor" "${secs_of[$l]}" "$floor_hash"
  done
done

n=${sizes[-1]}
if [ -z "${BENCH_SKIP_RATE:-}" ] && [ "$last_batches" -gt 100 ]; then
  echo "== apply under a write window of 100 writes per 20 s ($n devices, $last_batches upload batches)"
  base=$(start_cloud "window" --rate-limit-writes 100); measure "window"
  dir="$work/window"; mkdir -p "$dir"
  "$bin" site generate --devices "$n" --seed 1 --out "$dir/site" 2>/dev/null
  printf '[cloud]\nendpoint = "%s"\n' "$base" > "$dir/attach.toml"
  run "full sync under the write window" "$sum_steps" "$bin" --config "$dir/attach.toml" --output json apply --yes
  # Ideal: every window but the last full, the last as long as its share of the unthrottled run.
  ideal=$(python3 -c "
import math; b, t = $last_batches, ${secs_of["full sync (apply, 4 channels)"]}
w = math.ceil(b / 100); print((w - 1) * 20 + t * (b - (w - 1) * 100) / b)")
  printf '  %-52s %6.1f s\n' "ideal ($last_batches writes, 100 per 20 s)" "$ideal"
  ratio "under the write window / ideal" "${secs_of["full sync under the write window"]}" "$ideal"
  echo "  cloud's counters: $(curl -fs "$base/_emulator/stats")"
  stop_cloud "window"
fi

n=${sizes[0]}
echo "== apply under faults ($n devices: 10% 429 with Retry-After, 10% 429 without, 10% 5xx, 5% drops)"
base=$(start_cloud "faulty" --fault-429 0.1 --fault-429-bare 0.1 --fault-5xx 0.1 --fault-drop 0.05 --fault-seed 7)
measure "faulty"
dir="$work/faulty"; mkdir -p "$dir"
"$bin" site generate --devices "$n" --seed 1 --out "$dir/site" 2>/dev/null
printf '[cloud]\nendpoint = "%s"\n' "$base" > "$dir/attach.toml"
run "full sync under faults" "$sum_steps" "$bin" --config "$dir/attach.toml" --output json apply --yes
curl -fs "$base/_emulator/stats"; echo

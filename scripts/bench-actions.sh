#!/usr/bin/env bash
# Benchmark: cloud actions through the site's connector, against a local cloud (`cloudattach
# cloud serve` on loopback). Per size:
#   - the action round trip: from the request (`POST …/devices/{id}/actions`) to the answer
#     visible in `GET /api/v1/actions/{id}`, with a long-running connector idle (`connect
#     --interval 1h`): N resource-explorer actions one after another, median and p95;
#   - CMPivot, request to answer: over the whole site (`cmpivot-collection` on SMS00001), over
#     one generated collection, and on one device (`cmpivot`), each the median of R runs;
#   - `cloudattach explain device ID`: wall time and peak RSS.
# Every action is asked by the administrator the cloud auto-approves (a Global Administrator:
# every Intune permission), whom the site's rbac.json maps to a Full Administrator on SMS00001,
# so the site's half of the chain is checked too (default settings: Configuration Manager RBAC
# enforced). Prints a table; asserts nothing.
#
#   scripts/bench-actions.sh [SIZES...]      # default: 100000 1000000
#   CLOUDATTACH_BIN=/path/to/cloudattach scripts/bench-actions.sh ...     # a given build
#   BENCH_SITE_1000000=/tmp/p1m/site scripts/bench-actions.sh 1000000     # an existing site of that
#       size instead of a generated one: its files are linked, never changed (rbac.json and the
#       state go beside the links)
#   BENCH_ROUNDS=20 BENCH_QUERY_RUNS=3 …                                  # N and R
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CLOUDATTACH_BIN:-}" ]; then
  bin="$CLOUDATTACH_BIN"
else
  cargo build --release -p cloudattach-cli >&2
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/cloudattach"
fi
rounds=${BENCH_ROUNDS:-20}
query_runs=${BENCH_QUERY_RUNS:-3}
work=$(mktemp -d)
cleanup() { [ -f "$work/pids" ] && while read -r p; do kill "$p" 2>/dev/null || true; done < "$work/pids"; rm -rf "$work"; }
trap cleanup EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_cloud() { # name (prints the base URL; the pid is in $work/<name>.pid)
  local name=$1 port; port=$(free_port)
  "$bin" cloud serve --addr "127.0.0.1:$port" --data "$work/$name" --auto-approve admin@contoso.example \
    --device-code-interval-secs 1 >"$work/$name.log" 2>&1 &
  echo $! >> "$work/pids"
  echo $! > "$work/$name.pid"
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/contoso.example/v2.0/.well-known/openid-configuration" >/dev/null 2>&1 && break
    sleep 0.1
  done
  echo "http://127.0.0.1:$port"
}

# The administrator of the seeded contoso tenant, as the cloud's seed names them.
ADMIN_OID=c0257050-0000-4000-9000-000000000001
TENANT_ID=c0257050-0000-4000-8000-000000000001

# peak MiB and wall seconds of a command: "<seconds> <MiB>"
timed() {
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%e %M' -o "$work/t" "$@" >/dev/null 2>"$work/err" || { tail -5 "$work/err" >&2; return 1; }
    awk '{printf "%.2f %.1f\n", $1, $2/1024}' "$work/t"
  else
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"{time.monotonic() - t:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}")
PY
  fi
}

printf '%-10s %-52s %12s\n' size measure value
for n in "${sizes[@]}"; do
  dir="$work/site-$n"; mkdir -p "$dir/site"
  existing_var="BENCH_SITE_$n"; existing=${!existing_var:-}
  if [ -n "$existing" ]; then
    for f in site.toml devices.jsonl collections.json; do
      [ -f "$existing/$f" ] || { echo "$existing has no $f" >&2; exit 2; }
      ln -s "$(realpath "$existing/$f")" "$dir/site/$f"
    done
    lines=$(wc -l < "$existing/devices.jsonl")
    [ "$lines" -eq "$n" ] || { echo "$existing has $lines devices, not $n" >&2; exit 2; }
  else
    t0=$(date +%s.%N)
    "$bin" site generate --devices "$n" --seed 1 --out "$dir/site" 2>/dev/null
    printf '%-10s %-52s %10.1f s\n' "$n" "site generate" "$(echo "$(date +%s.%N) - $t0" | bc -l)"
  fi
  cat > "$dir/site/rbac.json" <<JSON
{"discovered_users": [{"upn": "admin@contoso.example", "object_id": "$ADMIN_OID", "tenant_id": "$TENANT_ID", "source": "entra"}],
 "administrative_users": [{"upn": "admin@contoso.example", "roles": ["Full Administrator"], "collections": ["SMS00001"]}]}
JSON
  base=$(start_cloud "cloud-$n")
  printf '[cloud]\nendpoint = "%s"\n' "$base" > "$dir/attach.toml"
  t0=$(date +%s.%N)
  "$bin" --config "$dir/attach.toml" --output json apply --yes >/dev/null 2>"$work/apply.err" || { tail -5 "$work/apply.err" >&2; exit 1; }
  printf '%-10s %-52s %10.1f s\n' "$n" "apply (attach and first upload, context)" "$(echo "$(date +%s.%N) - $t0" | bc -l)"

  # The long-running connector, idle between actions (its first round is a delta with nothing
  # changed; the next is an hour away).
  (cd "$dir" && exec "$bin" --config "$dir/attach.toml" connect --interval 1h >"$work/connect-$n.out" 2>"$work/connect-$n.err") &
  cpid=$!
  echo $cpid >> "$work/pids"

  device=$(python3 -c "
import json,sys
for l in open('$dir/site/devices.jsonl'):
    d=json.loads(l)
    if d.get('client'): print(d['resource_id']); break")
  collection=$(python3 -c "
import json
cs=[c for c in json.load(open('$dir/site/collections.json')) if c['id']!='SMS00001' and c.get('members')]
print(cs[0]['id'])")

  python3 - "$base" "$n" "$device" "$collection" "$rounds" "$query_runs" <<'PY'
import json, statistics, sys, time, urllib.error, urllib.parse, urllib.request
base, n, device, collection, rounds, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
TENANT, CLIENT = "contoso.example", "00000000-0000-4000-8000-00000000c11e"

def post_form(path, form):
    try:
        with urllib.request.urlopen(base + path, urllib.parse.urlencode(form).encode()) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)

dc = post_form(f"/{TENANT}/oauth2/v2.0/devicecode",
               {"client_id": CLIENT, "scope": "api://cloudattach/.default offline_access"})
token = None
for _ in range(30):
    v = post_form(f"/{TENANT}/oauth2/v2.0/token", {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                                 "client_id": CLIENT, "device_code": dc["device_code"]})
    if "access_token" in v:
        token = v["access_token"]; break
    time.sleep(1.1)
assert token, "the administrator's device code was not approved"

def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, headers={"Authorization": "Bearer " + token,
                                 "Content-Type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req) as r:
        return json.load(r)

hid = call("GET", "/api/v1/hierarchies")["value"][0]["hierarchy_id"]
# The connector's first round (a delta with nothing changed) and heartbeat: then it is idle.
for _ in range(3600):
    h = call("GET", f"/api/v1/hierarchies/{hid}/connector")
    if h.get("last_upload"):
        break
    time.sleep(0.2)
else:
    sys.exit("the connector never reported its first round")

def round_trip(target, action, params):
    t = time.monotonic()
    a = call("POST", f"/api/v1/hierarchies/{hid}/{target}/actions", {"action": action, "parameters": params})
    while True:
        d = call("GET", f"/api/v1/actions/{a['id']}")
        if d["status"] not in ("pending", "running"):
            break
        time.sleep(0.002)
    elapsed = time.monotonic() - t
    if d["status"] != "succeeded":
        sys.exit(f"{action}: {d['status']} {d.get('error')}")
    return elapsed, d

def row(measure, value):
    print(f"{n:<10} {measure:<52} {value:>12}", flush=True)

times = sorted(round_trip(f"devices/{device}", "resource-explorer", {})[0] for _ in range(rounds))
p95 = times[min(len(times) - 1, max(0, round(0.95 * len(times)) - 1))]
row(f"resource-explorer round trip, median of {rounds}", f"{statistics.median(times) * 1000:.0f} ms")
row(f"resource-explorer round trip, p95 of {rounds}", f"{p95 * 1000:.0f} ms")

query = "Device | summarize count() by join_type"
for label, target, action, q in [
    ("CMPivot over the whole site (SMS00001)", "collections/SMS00001", "cmpivot-collection", query),
    (f"CMPivot over collection {collection}", f"collections/{collection}", "cmpivot-collection", query),
    (f"CMPivot on device {device}", f"devices/{device}", "cmpivot", "Device | project name, os_build, join_type"),
]:
    results = [round_trip(target, action, {"query": q}) for _ in range(runs)]
    rows = results[0][1]["result"]["rows"]
    counted = sum(v for r in rows for v in r if type(v) is int) if action == "cmpivot-collection" else len(rows)
    row(f"{label}, median of {runs}", f"{statistics.median(r[0] for r in results):.2f} s")
    row(f"  (devices counted / rows)", f"{counted}")
PY

  kill -TERM "$cpid" 2>/dev/null || true
  wait "$cpid" 2>/dev/null || true

  read -r secs mib < <(timed "$bin" --config "$dir/attach.toml" --output json explain device "$device")
  printf '%-10s %-52s %10s s\n' "$n" "explain device $device, wall" "$secs"
  printf '%-10s %-52s %8s MiB\n' "$n" "explain device $device, peak RSS" "$mib"
  kill "$(cat "$work/cloud-$n.pid")" 2>/dev/null || true
done

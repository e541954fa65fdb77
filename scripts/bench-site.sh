#!/usr/bin/env bash
# Benchmark: `site generate`, `check` and `plan` on 100,000 and 1,000,000-device sites, with
# wall time and peak memory (max RSS). Prints numbers; asserts nothing.
#
#   scripts/bench-site.sh [SIZES...]      # default: 100000 1000000
#   CLOUDATTACH_BIN=/path/to/cloudattach scripts/bench-site.sh ...   # a given build (before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${CLOUDATTACH_BIN:-}" ]; then
  bin="$CLOUDATTACH_BIN"
else
  cargo build --release -p cloudattach-cli >&2
  bin="${CARGO_TARGET_DIR:-$PWD/target}/release/cloudattach"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100000 1000000)


printf '%-28s %11s %13s\n' "step" "wall" "peak RSS"
for n in "${sizes[@]}"; do
  site="$work/site-$n"
  cat > "$work/attach-$n.toml" <<TOML
[site]
path = "site-$n"
TOML
  /usr/bin/time -f '%e %M' -o "$work/t" "$bin" site generate --devices "$n" --seed 1 --out "$site" 2>/dev/null
  read -r secs kib < "$work/t"
  printf '%-28s %9.2f s %9.1f MiB   (%s MiB/s)\n' "generate $n" "$secs" "$(echo "$kib/1024" | bc -l)" \
    "$(echo "$(du -sm "$site" | cut -f1)/$secs" | bc -l | xargs printf '%.0f')"
  for cmd in check plan; do
    /usr/bin/time -f '%e %M' -o "$work/t" "$bin" --config "$work/attach-$n.toml" --output json "$cmd" >/dev/null 2>&1 || true
    read -r secs kib < "$work/t"
    printf '%-28s %9.2f s %9.1f MiB   (%s devices/s)\n' "$cmd $n" "$secs" "$(echo "$kib/1024" | bc -l)" \
      "$(echo "$n/$secs" | bc -l | xargs printf '%.0f')"
  done
done

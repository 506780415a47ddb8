#!/usr/bin/env bash
# Create + start + wait + delete of a trivial container (`/bin/true`) with vessel-runc against
# runc and crun from Debian, same bundle, same run, in interleaved rounds. Prints medians and
# ratios (below 1: vessel-runc is faster).
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-40}
WORK=$(mktemp -d /tmp/vessel-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
make_bundle "$WORK/bundle"

# cycle RUNTIME ROOT: one container life through the runtime's own command line.
cat > "$WORK/cycle.sh" <<'SH'
#!/bin/sh
rt=$1; root=$2; id=b$$
$rt --root "$root" create --bundle "$BUNDLE" "$id" >/dev/null || exit 1
$rt --root "$root" start "$id" || exit 1
# wait until it has stopped
while [ "$($rt --root "$root" state "$id" 2>/dev/null | grep -o '"status": *"[a-z]*"' | grep -o '[a-z]*"$')" != 'stopped"' ]; do :; done
$rt --root "$root" delete "$id"
SH
chmod +x "$WORK/cycle.sh"
export BUNDLE=$WORK/bundle

cmds=("$WORK/cycle.sh $BIN/vessel-runc $WORK/root-vessel" "$WORK/cycle.sh $(command -v runc) $WORK/root-runc")
names=(vessel-runc runc)
if "$WORK/cycle.sh" "$(command -v crun)" "$WORK/root-crun" >"$WORK/crun.err" 2>&1; then
  cmds+=("$WORK/cycle.sh $(command -v crun) $WORK/root-crun"); names+=(crun)
else
  echo "crun $(crun --version | head -1 | awk '{print $3}') refused on this host: $(head -c 300 "$WORK/crun.err")"
fi
args=()
for i in "${!cmds[@]}"; do args+=("${names[$i]}" ":" "${cmds[$i]}"); done
interleave "$RUNS" "$WORK" "${args[@]}"

#!/usr/bin/env bash
# Builds vegeta (the open-loop, constant-rate HTTP load generator `make bench` uses for its
# fixed-rate runs) from its pinned Go module (tools/vegeta) into .cache/bin/vegeta.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OPA_CACHE_DIR:-$here/.cache/bin}/vegeta
stamp=$out.version
want=$(grep -m 1 -oE 'tsenart/vegeta/v12 v[0-9][^ ]*' "$here/tools/vegeta/go.mod" | cut -d' ' -f2)
if [[ -x $out && -f $stamp && $(<"$stamp") == "$want" ]]; then
	exit 0
fi
command -v go >/dev/null || { echo "build-vegeta: no Go toolchain on PATH; install Go 1.24+ to build vegeta $want" >&2; exit 1; }
echo "build-vegeta: building vegeta $want from its Go module (once)" >&2
mkdir -p "$(dirname "$out")"
(cd "$here/tools/vegeta" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" github.com/tsenart/vegeta/v12)
mv "$out.tmp" "$out"
printf '%s\n' "$want" >"$stamp"

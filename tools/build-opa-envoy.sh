#!/usr/bin/env bash
# Builds the benchmark's OPA-Envoy ext_authz server (tools/opa-envoy: OPA's pinned Go packages
# answering Envoy's Check like the OPA-Envoy plugin) into .cache/bin/opa-envoy. Rebuilt when
# its sources change; a stamp keeps the hash of go.mod, go.sum and main.go.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=$here/tools/opa-envoy
out=${OPA_CACHE_DIR:-$here/.cache/bin}/opa-envoy
stamp=$out.version
want=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
if [[ -x $out && -f $stamp && $(<"$stamp") == "$want" ]]; then
	exit 0
fi
command -v go >/dev/null || { echo "build-opa-envoy: no Go toolchain on PATH; install Go 1.24+" >&2; exit 1; }
echo "build-opa-envoy: building opa-envoy (OPA $(grep -oE 'open-policy-agent/opa v[0-9][^ ]*' "$src/go.mod" | cut -d' ' -f2)) from Go modules (a minute or two, once)" >&2
mkdir -p "$(dirname "$out")"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" .)
mv "$out.tmp" "$out"
printf '%s\n' "$want" >"$stamp"

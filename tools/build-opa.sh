#!/usr/bin/env bash
# Builds the real OPA CLI from its pinned Go module (tools/opa) into .cache/bin/opa.
# No prebuilt OPA binary can be downloaded on this project's machines; Go modules can.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${OPA_CACHE_DIR:-$here/.cache/bin}/opa
stamp=$out.version
want=$(grep -m 1 -oE 'open-policy-agent/opa v[0-9][^ ]*' "$here/tools/opa/go.mod" | cut -d' ' -f2)
if [[ -x $out && -f $stamp && $(<"$stamp") == "$want" ]]; then
	exit 0
fi
command -v go >/dev/null || { echo "build-opa: no Go toolchain on PATH; install Go 1.24+ to build OPA $want" >&2; exit 1; }
echo "build-opa: building OPA $want from its Go module (a minute or two, once)" >&2
mkdir -p "$(dirname "$out")"
(cd "$here/tools/opa" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" .)
mv "$out.tmp" "$out"
printf '%s\n' "$want" >"$stamp"
# No pipe into head here: under pipefail an early-closing reader fails the script (SIGPIPE).
version=$("$out" version)
printf '%s\n' "${version%%$'\n'*}" >&2

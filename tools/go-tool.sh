#!/usr/bin/env bash
# Builds one CLI from a pinned Go module under tools/NAME (go.mod + tools.go) into .cache/bin,
# once: a stamp beside the binary holds a hash of that go.mod and go.sum, so a changed pin
# rebuilds and an unchanged one costs nothing. Used by tools/build-actionlint.sh and
# tools/build-helm.sh (no prebuilt binary can be downloaded on this project's machines).
#
#   tools/go-tool.sh NAME GO_PACKAGE [HINT]    e.g. tools/go-tool.sh helm helm.sh/helm/v3/cmd/helm
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name=$1 package=$2 hint=${3:-}
src=$here/tools/$name
out=${GO_TOOL_CACHE_DIR:-$here/.cache/bin}/$name
stamp=$out.version
pin=$(grep -m 1 -E "^require ${package%%/cmd/*}|^\s+${package%%/cmd/*} " "$src/go.mod" | awk '{print $NF}')
want="$pin $(cat "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)"
if [[ -x $out && -f $stamp && $(<"$stamp") == "$want" ]]; then
	exit 0
fi
command -v go >/dev/null || {
	echo "build-$name: no Go toolchain on PATH; install Go 1.24+ to build $name $pin" >&2
	exit 1
}
echo "build-$name: building $name $pin from its Go module${hint:+ ($hint)}" >&2
mkdir -p "$(dirname "$out")"
(cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" "$package")
mv "$out.tmp" "$out"
printf '%s\n' "$want" >"$stamp"

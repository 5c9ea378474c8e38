#!/usr/bin/env bash
# Builds the real OPA-Envoy plugin (OPA with Envoy's ext_authz gRPC server) into
# .cache/bin/opa-envoy-plugin, from its source in OPA_ENVOY_PLUGIN_SRC (default
# ../shared/third_party/opa-envoy-plugin: the Go module proxy refuses the module itself but
# serves its dependencies). The source folder is read-only: it is copied into .cache first, so
# nothing is ever written there. Rebuilt when the source changes (a stamp keeps its hash).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=${OPA_ENVOY_PLUGIN_SRC:-$here/../shared/third_party/opa-envoy-plugin}
out=${OPA_CACHE_DIR:-$here/.cache/bin}/opa-envoy-plugin
stamp=$out.version
if [[ ! -f $src/go.mod || ! -d $src/cmd/opa-envoy-plugin ]]; then
	echo "build-opa-envoy: no opa-envoy-plugin source at $src (set OPA_ENVOY_PLUGIN_SRC to a checkout of github.com/open-policy-agent/opa-envoy-plugin)" >&2
	exit 1
fi
# the hash of every file of the source, by path: a changed or added file rebuilds
want=$(cd "$src" && find . -type f ! -path './.git/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
if [[ -x $out && -f $stamp && $(<"$stamp") == "$want" ]]; then
	exit 0
fi
command -v go >/dev/null || { echo "build-opa-envoy: no Go toolchain on PATH; install Go 1.25+" >&2; exit 1; }
commit=$(cat "$src/UPSTREAM_COMMIT" 2>/dev/null || echo unknown)
echo "build-opa-envoy: building the OPA-Envoy plugin (upstream $commit) from $src (about 90 s, once)" >&2
work=$here/.cache/opa-envoy-plugin-src
rm -rf "$work"
mkdir -p "$work" "$(dirname "$out")"
cp -R "$src/." "$work/"
chmod -R u+w "$work"
(cd "$work" && CGO_ENABLED=0 go build -trimpath -o "$out.tmp" ./cmd/opa-envoy-plugin)
rm -rf "$work"
mv "$out.tmp" "$out"
printf '%s\n' "$want" >"$stamp"
version=$("$out" version)
printf 'build-opa-envoy: %s\n' "${version%%$'\n'*}" >&2

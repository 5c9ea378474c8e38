#!/usr/bin/env bash
# Builds the Helm 3 CLI (tools/helm, pinned v3.22.0) into .cache/bin/helm, once.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh" helm helm.sh/helm/v3/cmd/helm "about 2.5 minutes on 2 cores, once"

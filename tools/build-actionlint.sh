#!/usr/bin/env bash
# Builds actionlint (tools/actionlint, pinned v1.7.12) into .cache/bin/actionlint, once.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh" actionlint github.com/rhysd/actionlint/cmd/actionlint "seconds, once"

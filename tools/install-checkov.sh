#!/usr/bin/env bash
# Installs checkov (pinned below) into its own virtualenv, .cache/checkov-venv, and links it as
# .cache/bin/checkov. Its own venv because checkov pins many libraries tightly; the app's
# dependency set (pyproject.toml) stays free of them. Once: a stamp holds the pinned version.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHECKOV_VERSION=3.3.30
PYTHON=${PYTHON:-python3}
venv=$here/.cache/checkov-venv
out=$here/.cache/bin/checkov
stamp=$venv/.installed
if [[ -x $out && -f $stamp && $(<"$stamp") == "$CHECKOV_VERSION" ]]; then
	exit 0
fi
echo "install-checkov: pip install checkov==$CHECKOV_VERSION into .cache/checkov-venv (a minute or two, once)" >&2
rm -rf "$venv"
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
mkdir -p "$(dirname "$out")"
ln -sf "$venv/bin/checkov" "$out"
printf '%s\n' "$CHECKOV_VERSION" >"$stamp"

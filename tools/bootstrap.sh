#!/usr/bin/env bash
# Prepares a fresh machine for `make up` and `make test`: system packages (Redis, pg_cron,
# wrk), the virtualenv with the project installed, and the OPA binary built from Go.
# Idempotent and quick when everything is already there. One run at a time per checkout:
# make targets started together (make test & make up) would otherwise race two apt-get runs
# and two `pip install -e` into the same .venv; the second waits for the first (flock).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
mkdir -p .cache
exec 9>.cache/bootstrap.lock
if ! flock --nonblock 9; then
	echo "bootstrap: another bootstrap of $here is running; waiting for it" >&2
	flock 9
fi
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(redis-server postgresql-15-cron wrk)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
	[[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
	if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null; then
		echo "bootstrap: apt-get install ${missing[*]}" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
	else
		echo "bootstrap: missing system packages: ${missing[*]} (install them with your package manager)" >&2
	fi
fi

if [[ ! -x .venv/bin/python ]]; then
	echo "bootstrap: creating .venv" >&2
	"$PYTHON" -m venv .venv
fi
stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
	echo "bootstrap: pip install -e .[dev]" >&2
	.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
	.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch "$stamp"
fi
tools/build-opa.sh

#!/usr/bin/env bash
# Prints the path of a Terraform CLI for `make deploy-check` (fmt only: providers cannot be
# downloaded here, so validate does not run). Terraform is not buildable from the Go module
# proxy (its go.mod replaces nested modules that module zips leave out) and no package
# registry reachable here ships it, so this finds one or fails saying what to install.
set -euo pipefail
WANT_MINOR=11 # Terraform 1.11.x (1.11.4 in CI); fmt's output is stable across 1.x patch releases
for candidate in "${TERRAFORM:-}" "$(command -v terraform || true)" /usr/local/bin/terraform; do
	[[ -n $candidate && -x $candidate ]] || continue
	version=$(TF_CLI_CONFIG_FILE=/dev/null "$candidate" version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p')
	if [[ $version =~ ^1\.([0-9]+)\. ]] && ((BASH_REMATCH[1] >= WANT_MINOR)); then
		echo "$candidate"
		exit 0
	fi
	echo "terraform.sh: $candidate is Terraform ${version:-unknown}; need 1.$WANT_MINOR or newer" >&2
done
echo "terraform.sh: no Terraform 1.$WANT_MINOR+ found: install Terraform 1.11.4 (HashiCorp's release zip or apt repository) on PATH, or set TERRAFORM=/path/to/terraform" >&2
exit 1

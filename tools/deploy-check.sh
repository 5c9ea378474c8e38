#!/usr/bin/env bash
# `make deploy-check`: the static checks of everything that deploys (docs/DEPLOY.md, "What CI
# proves"), with tools the project installs itself (tools/build-actionlint.sh, build-helm.sh,
# install-checkov.sh, terraform.sh):
#   terraform fmt -check on deploy/terraform, then checkov on it (no provider can be downloaded
#   here, so `terraform validate` cannot run: tests/unit/test_terraform_static.py checks the
#   module wiring instead); actionlint on .github/workflows; helm lint + helm template of
#   deploy/helm/gateway on render's kubernetes output, checkov on that output; checkov on the
#   production Dockerfiles.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
bin=$here/.cache/bin
PY=${PY:-$here/.venv/bin/python}
KUBE_VERSION=${KUBE_VERSION:-1.30.0}
step() { printf '\n=== deploy-check: %s\n' "$*" >&2; }

tools/build-actionlint.sh
tools/build-helm.sh
tools/install-checkov.sh
terraform=$(tools/terraform.sh)
checkov=("$bin/checkov" --config-file deploy/checkov.yaml)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# an empty CLI config: nothing from the machine's ~/.terraformrc, no registry call by fmt
: >"$work/terraformrc"
export TF_CLI_CONFIG_FILE=$work/terraformrc

step "terraform fmt -check -recursive deploy/terraform ($("$terraform" version | tr '\n' ' '))"
"$terraform" fmt -check -recursive -diff deploy/terraform

step "checkov: terraform"
"${checkov[@]}" -d deploy/terraform --framework terraform

step "actionlint .github/workflows"
"$bin/actionlint" -no-color

step "render --target kubernetes into the chart, helm lint, helm template"
chart=$work/chart
cp -r deploy/helm/gateway "$chart"
"$PY" render.py --target kubernetes --var namespace=gateway --out "$chart/files/rendered" \
	--envoy-dir /etc/gateway/envoy
"$bin/helm" lint "$chart" --strict --namespace gateway --kube-version "$KUBE_VERSION"
mkdir -p "$work/manifests"
"$bin/helm" template gateway "$chart" --namespace gateway --kube-version "$KUBE_VERSION" \
	--api-versions monitoring.coreos.com/v1 >"$work/manifests/gateway.yaml"
echo "$(grep -c '^kind:' "$work/manifests/gateway.yaml") objects rendered" >&2

step "checkov: kubernetes (the chart's output)"
"${checkov[@]}" -d "$work/manifests" --framework kubernetes

step "checkov: dockerfile (deploy/images)"
"${checkov[@]}" -d deploy/images --framework dockerfile

step "OK"

//go:build tools

// Package tools pins the Helm 3 CLI, which `make deploy-check` uses to lint and template
// deploy/helm/gateway (no prebuilt Helm binary can be downloaded on these machines).
package tools

import _ "helm.sh/helm/v3/cmd/helm"

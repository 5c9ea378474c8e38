//go:build tools

// Package tools pins actionlint, the GitHub Actions workflow linter `make deploy-check` runs on
// .github/workflows (its PyPI wrapper downloads a binary from a site these machines cannot reach).
package tools

import _ "github.com/rhysd/actionlint/cmd/actionlint"

// Command opa is the real Open Policy Agent CLI, built from OPA's pinned Go module
// because no prebuilt binary can be downloaded on the machines this project runs on.
package main

import (
	"os"

	"github.com/open-policy-agent/opa/cmd"
)

func main() {
	if err := cmd.RootCommand.Execute(); err != nil {
		os.Exit(1)
	}
}

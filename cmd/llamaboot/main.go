// Command llamaboot installs llama.cpp bundles and runs llama-server
// instances in containers. It is a multi-call binary: started as
// check-and-run-llama-cpp.sh it acts as "run", as install-llama-cpp-pkg.sh
// or get-llama-cpp-pkg.sh as "install", as infer-dev-entry.sh as "entry".
package main

import (
	"os"

	"github.com/llamaboot/llamaboot/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args))
}

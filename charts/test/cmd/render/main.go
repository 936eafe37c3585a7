// Command render writes manifests/extauth.yaml, the chart rendered for users
// without Helm (`make manifests`). Run it from charts/test.
package main

import (
	"flag"
	"fmt"
	"os"

	charttest "github.com/extauth/extauth/charts/test"
)

func main() {
	chart := flag.String("chart", charttest.ChartDir, "the chart's directory")
	out := flag.String("o", charttest.ManifestPath, "the file to write")
	flag.Parse()
	if err := charttest.WriteManifest(*chart, *out); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", *out)
}

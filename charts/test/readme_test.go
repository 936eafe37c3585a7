package charttest

import (
	"os"
	"strings"
	"testing"
)

// checksums are the pod template's checksum annotations of the values;
// both must be there.
func checksums(t *testing.T, v map[string]any) map[string]string {
	t.Helper()
	a := render(t, v).Deployment.Spec.Template.Annotations
	if a["checksum/config"] == "" || a["checksum/secret"] == "" {
		t.Fatalf("no checksum annotations: %v", a)
	}
	return a
}

// readmeSection is the text of the chart README's "## heading" section
// and its first yaml block.
func readmeSection(t *testing.T, heading string) (section, yamlBlock string) {
	t.Helper()
	readme, err := os.ReadFile(ChartDir + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## "+heading+"\n")
	section, _, _ = strings.Cut(section, "\n## ")
	_, block, ok2 := strings.Cut(section, "```yaml\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatalf("README.md: no yaml block in the section %q", heading)
	}
	return section, block
}

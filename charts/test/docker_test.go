package charttest

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestDockerfileBinary: no Docker engine runs here, so this builds the
// binary the way the Dockerfile does and checks what the image relies on:
// a static executable (distroless static has no libc) that runs as the
// image's non-root user.
func TestDockerfileBinary(t *testing.T) {
	root := filepath.Join("..", "..")
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(dockerfile)
	for _, want := range []string{
		"CGO_ENABLED=0", "-trimpath", "-X main.version=", "-X main.commit=",
		"FROM gcr.io/distroless/static", "USER 65532:65532", `ENTRYPOINT ["/extauth"]`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if regexp.MustCompile(`(?m)^(RUN|CMD|ENTRYPOINT)\s+[^\[]`).MatchString(df[strings.LastIndex(df, "FROM "):]) {
		t.Error("the final stage uses a shell form: the image has no shell")
	}

	// The test's temporary folders are 0700 and owned by whoever runs the
	// test: open them so uid 65532 can reach the binary.
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "extauth")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=test -X main.commit=abc1234", "-o", bin, "./cmd/extauth")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%v)", p.Type)
		}
	}

	// Run it as the image's user, 65532, from a directory it may not write.
	run := exec.Command(bin, "version")
	run.Dir = "/"
	if os.Geteuid() == 0 {
		run.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65532, Gid: 65532}}
	}
	out, err := run.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "extauth test (commit abc1234") {
		t.Errorf("as uid 65532: %v: %s", err, out)
	}
}

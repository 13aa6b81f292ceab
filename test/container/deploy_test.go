package container_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// TestGracePeriodCoversStop: the Deployment gives a pod's stop more time
// (terminationGracePeriodSeconds) than the image's command line may take:
// --stop-delay, then the drain, bounded by --drain-timeout. It needs no
// root: it reads the files.
func TestGracePeriodCoversStop(t *testing.T) {
	root, err := procwatch.ModuleRoot("github.com/procswitch/supervisor")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := readContainerfile(filepath.Join(root, "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	im := &image{file: cf}
	delay, drain := im.flagDuration(t, "--stop-delay"), im.flagDuration(t, "--drain-timeout")
	if delay == 0 || drain == 0 {
		t.Errorf("the image's command line %q: want --stop-delay and --drain-timeout set, so that the grace period can be checked", im.command())
	}
	path := filepath.Join(root, "deploy/kubernetes/deployment.yaml")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*terminationGracePeriodSeconds:\s*(\d+)\s*$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no terminationGracePeriodSeconds (the default, 30s, is below the drain)", path)
	}
	n, _ := strconv.Atoi(string(m[1]))
	grace := time.Duration(n) * time.Second
	if grace <= delay+drain {
		t.Errorf("%s: terminationGracePeriodSeconds %v, want above --stop-delay %v + --drain-timeout %v", path, grace, delay, drain)
	}
	for _, re := range []string{`path: /healthz`, `path: /readyz`, `prometheus.io/port: "9090"`, `claimName: pathfind-builds`} {
		if !regexp.MustCompile(regexp.QuoteMeta(re)).Match(b) {
			t.Errorf("%s: no %q", path, re)
		}
	}
}

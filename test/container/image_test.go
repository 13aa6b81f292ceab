package container_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/procswitch/supervisor/test/procwatch"
)

// buildTimeout bounds each go build.
const buildTimeout = 5 * time.Minute

// The Containerfile's builder stage runs
//
//	CGO_ENABLED=1 go build <buildFlags> -o /out/ <packages>
//
// and these are the files it leaves in /out, by the package they come from.
// buildImage builds them the same way, and refuses a Containerfile whose
// build line or COPY --from=build lines it does not know.
const buildFlags = `-trimpath -buildvcs=false -tags netgo,osusergo -ldflags="-s -w -linkmode external -extldflags -static -X main.version=${VERSION}"`

var outputs = map[string]string{
	"/out/supervisor": "./cmd/supervisor",
	"/out/pathfind":   "./example-game/pathfind",
}

// Versions of pathfind: the image's own build, and a new one.
const (
	imageVersion = "v1"
	newVersion   = "v2"
)

// image is the image's root filesystem as the Containerfile would build it,
// and the builds the tests use besides.
type image struct {
	file       *containerfile
	dir        string            // the builds
	files      map[string]string // the final stage's files: path in the image -> build
	supervisor string            // the supervisor's build
	pathfindV2 string            // pathfind built as newVersion
}

// containerfile is what the tests take from the Containerfile: the final
// stage's instructions.
type containerfile struct {
	path       string
	run        []string          // the builder's RUN lines
	copies     map[string]string // COPY --from=build: destination -> source
	env        []string          // ENV, as KEY=VALUE
	volumes    []string          // VOLUME
	entrypoint []string
	cmd        []string
}

// readContainerfile parses the subset of the Containerfile syntax that the
// file uses: one instruction per line, continued by a trailing backslash;
// exec-form (JSON) ENTRYPOINT and CMD, since the image has no shell.
func readContainerfile(path string) (*containerfile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cf := &containerfile{path: path, copies: map[string]string{}}
	var lines []string
	var cont strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cont.WriteString(s + " ")
			continue
		}
		lines = append(lines, cont.String()+line)
		cont.Reset()
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	stages := 0
	var copies []string // the COPY lines of the stage being read
	for _, line := range lines {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch instr = strings.ToUpper(instr); instr {
		case "FROM": // only the last stage's instructions make the image
			stages++
			copies, cf.env, cf.volumes, cf.entrypoint, cf.cmd = nil, nil, nil, nil, nil
		case "RUN":
			cf.run = append(cf.run, rest)
		case "COPY":
			copies = append(copies, rest)
		case "ENV":
			cf.env = append(cf.env, strings.Fields(rest)...)
		case "VOLUME":
			cf.volumes = append(cf.volumes, strings.Fields(rest)...)
		case "ENTRYPOINT", "CMD":
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil {
				return nil, fmt.Errorf("%s: %s %s: want the exec form, a JSON array (the image has no shell): %v", path, instr, rest, err)
			}
			if instr == "CMD" {
				cf.cmd = argv
			} else {
				cf.entrypoint = argv
			}
		}
	}
	for _, c := range copies {
		f := strings.Fields(c)
		if len(f) != 3 || f[0] != "--from=build" {
			return nil, fmt.Errorf("%s: COPY %s: want COPY --from=build SRC DST in the final stage", path, c)
		}
		cf.copies[f[2]] = f[1]
	}
	for _, kv := range cf.env {
		if !strings.Contains(kv, "=") {
			return nil, fmt.Errorf("%s: ENV %s: want KEY=VALUE", path, kv)
		}
	}
	if stages < 2 || len(cf.entrypoint) == 0 || len(cf.volumes) != 1 {
		return nil, fmt.Errorf("%s: want a builder stage and a final stage with an ENTRYPOINT and one VOLUME", path)
	}
	return cf, nil
}

// buildImage reads the Containerfile and builds its binaries into dir.
func buildImage(dir string) (*image, error) {
	root, err := procwatch.ModuleRoot("github.com/procswitch/supervisor")
	if err != nil {
		return nil, err
	}
	cf, err := readContainerfile(filepath.Join(root, "Containerfile"))
	if err != nil {
		return nil, err
	}
	if !strings.Contains(strings.Join(cf.run, "\n"), "CGO_ENABLED=1 go build "+buildFlags) {
		return nil, fmt.Errorf("%s: no `CGO_ENABLED=1 go build %s` line: the Containerfile builds otherwise than this test; change both together", cf.path, buildFlags)
	}
	im := &image{file: cf, dir: dir, files: map[string]string{}}
	var builds []build
	for dst, src := range cf.copies {
		pkg, ok := outputs[src]
		if !ok {
			return nil, fmt.Errorf("%s: COPY --from=build %s %s: a file this test does not build; change both together", cf.path, src, dst)
		}
		out := filepath.Join(dir, filepath.Base(src))
		im.files[dst] = out
		builds = append(builds, build{out: out, pkg: pkg, version: imageVersion})
		if src == "/out/supervisor" {
			im.supervisor = out
		}
	}
	if im.supervisor == "" {
		return nil, fmt.Errorf("%s: the supervisor is not copied into the image", cf.path)
	}
	im.pathfindV2 = filepath.Join(dir, "pathfind-"+newVersion)
	builds = append(builds, build{out: im.pathfindV2, pkg: outputs["/out/pathfind"], version: newVersion})
	if err := goBuild(root, builds); err != nil {
		return nil, err
	}
	return im, nil
}

type build struct{ out, pkg, version string }

// goBuild runs the builds in parallel, as the Containerfile's builder does:
// static, with its flags.
func goBuild(root string, builds []build) error {
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, b := range builds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
			defer cancel()
			args := []string{"build", "-trimpath", "-buildvcs=false", "-tags", "netgo,osusergo",
				"-ldflags=-s -w -linkmode external -extldflags -static -X main.version=" + b.version, "-o", b.out, b.pkg}
			cmd := exec.CommandContext(ctx, procwatch.GoTool(), args...)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
			cmd.WaitDelay = 5 * time.Second
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("CGO_ENABLED=1 go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// rootfs is one container's root filesystem and its volume.
type rootfs struct {
	dir    string // the root
	volume string // the host directory bound at the image's VOLUME
	mount  string // the VOLUME, inside the container
}

// rootfs lays the image's files out in a new directory, and makes the
// volume: a directory filled with the image's files under VOLUME, as podman
// fills a new named volume on its first mount. nspawn refuses a root
// without /usr ("doesn't look like it has an OS tree"), so there is an
// empty one, which the image does not need; nspawn makes the rest (/dev,
// /proc, /run, /tmp, ...) itself.
func (im *image) rootfs(t *testing.T) rootfs {
	t.Helper()
	base := t.TempDir()
	r := rootfs{dir: filepath.Join(base, "root"), volume: filepath.Join(base, "volume"), mount: im.file.volumes[0]}
	for _, d := range []string{filepath.Join(r.dir, "usr"), r.volume} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for dst, src := range im.files {
		p := filepath.Join(r.dir, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(p, src); err != nil {
			t.Fatal(err)
		}
		if rel, ok := strings.CutPrefix(dst, r.mount+"/"); ok {
			if err := copyFile(filepath.Join(r.volume, rel), src); err != nil {
				t.Fatal(err)
			}
		}
	}
	return r
}

// worker is the worker's path in the image's command line: the argument
// after "--".
func (im *image) worker() string {
	argv := im.command()
	for i, a := range argv {
		if a == "--" && i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return ""
}

// command is the image's command line: ENTRYPOINT then CMD.
func (im *image) command() []string {
	return append(append([]string(nil), im.file.entrypoint...), im.file.cmd...)
}

// testCommand is the image's command line with the listening addresses on
// loopback, port 0: the machine is shared, and the supervisor logs the
// ports it got.
func (im *image) testCommand(t *testing.T) []string {
	t.Helper()
	argv := im.command()
	var out []string
	listen := false
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			out = append(out, argv[i:]...)
			break
		}
		out = append(out, a)
		if i+1 >= len(argv) {
			continue
		}
		switch a {
		case "--listen":
			name, addr, _ := strings.Cut(argv[i+1], "=")
			network, _, ok := strings.Cut(addr, "://")
			if !ok || !strings.HasPrefix(network, "tcp") {
				t.Fatalf("%s: --listen %s: want NAME=tcp://ADDRESS", im.file.path, argv[i+1])
			}
			out = append(out, name+"="+network+"://127.0.0.1:0")
			listen = true
			i++
		case "--metrics-listen":
			out = append(out, "127.0.0.1:0")
			i++
		}
	}
	if !listen {
		t.Fatalf("%s: no --listen NAME=tcp://ADDRESS in the command line %q", im.file.path, argv)
	}
	return out
}

// flagDuration is the value of a duration flag in the image's command
// line; 0 when it is not there.
func (im *image) flagDuration(t *testing.T, name string) time.Duration {
	t.Helper()
	argv := im.testCommand(t)
	for i, a := range argv {
		if a == "--" {
			break
		}
		if a == name && i+1 < len(argv) {
			d, err := time.ParseDuration(argv[i+1])
			if err != nil {
				t.Fatalf("%s: %s %s: %v", im.file.path, name, argv[i+1], err)
			}
			return d
		}
	}
	return 0
}

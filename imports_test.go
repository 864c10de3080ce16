package upgrade

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestImportRules keeps the layering of the repository (DESIGN.md §2),
// for every .go file of the module, tests included:
//   - the root package never imports an adapter, reverseproxy/, http3/
//     nor the CLI;
//   - no adapter imports another adapter, reverseproxy/ or http3/;
//   - reverseproxy/ and http3/ import, of the module's packages, only the
//     root package, websocket/, extconnect/ and internal/ ones;
//   - nothing outside cmd/ imports anything under cmd/;
//   - the library packages (the root, the adapters, reverseproxy/,
//     extconnect/ and internal/) import only the standard library,
//     golang.org/x/net and the module's own packages; their tests may add
//     testify and goleak. QUIC enters only through http3/ and the CLI.
//
// An adapter is a package in a top-level directory other than cmd/,
// internal/, extconnect/, reverseproxy/ and http3/ (websocket/, h2c/);
// extconnect is not a protocol but a process setting, which any program
// or test binary that serves HTTP/2 extended CONNECT imports. A package
// under internal/ that only tests import (wiretest) counts as test code.
// Directories with a go.mod of their own (bench/, examples/…) are other
// modules, and node_modules and testdata hold no package of this module:
// they are skipped.
func TestImportRules(t *testing.T) {
	t.Parallel()
	module := modulePath(t)
	files, skipped := moduleFiles(t)
	assert.Contains(t, skipped, "bench", "bench/ is a module of its own")
	assert.Contains(t, skipped, "examples/wsframing", "examples/wsframing is a module of its own")

	l := layers{module: module, forTests: map[string]bool{}}
	counts := map[string]int{}
	adapters := map[string]bool{}
	for _, f := range files {
		counts[top(f.dir)]++
		if a := top(f.dir); l.isAdapter(a) {
			adapters[a] = true
		}
	}
	require.True(t, adapters["websocket"] && adapters["h2c"], "adapters found: %v", adapters)
	require.Positive(t, counts["."], "no file of the root package found")
	require.Positive(t, counts["cmd"], "no file under cmd/ found")
	require.Positive(t, counts["reverseproxy"], "no file under reverseproxy/ found")
	l.findTestPackages(files)
	require.True(t, l.forTests["internal/wiretest"], "internal/wiretest is for tests only")

	var broken []string
	for _, f := range files {
		for _, ip := range f.imports {
			if why := l.check(f, ip); why != "" {
				broken = append(broken, f.name+" imports "+ip+": "+why)
			}
		}
	}
	slices.Sort(broken)
	assert.Empty(t, broken, "import rules (DESIGN.md §2) broken:\n\t%s", strings.Join(broken, "\n\t"))
	t.Logf("%d files checked; adapters %v; other modules skipped: %v", len(files), adapters, skipped)
}

// goFile is a .go file of the module and what it imports.
type goFile struct {
	name    string // slash-separated, relative to the module root
	dir     string // its directory: "." for the root package
	imports []string
}

// test reports whether f is a test file.
func (f goFile) test() bool { return strings.HasSuffix(f.name, "_test.go") }

// modulePath returns the module path go.mod declares.
func modulePath(t *testing.T) string {
	gomod, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	var module string
	for _, l := range strings.Split(string(gomod), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(l), "module "); ok {
			module = strings.TrimSpace(m)
		}
	}
	require.NotEmpty(t, module, "no module line in go.mod")
	return module
}

// moduleFiles returns the module's .go files with their imports, and the
// directories skipped as other modules.
func moduleFiles(t *testing.T) (files []goFile, skipped []string) {
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := filepath.ToSlash(p)
		if d.IsDir() {
			if name == "." {
				return nil
			}
			base := d.Name()
			if base == "node_modules" || base == "testdata" || strings.HasPrefix(base, ".") || strings.HasPrefix(base, "_") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
				skipped = append(skipped, name)
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		fi := goFile{name: name, dir: path.Dir(name)}
		for _, s := range f.Imports {
			ip, err := strconv.Unquote(s.Path.Value)
			if err != nil {
				return err
			}
			fi.imports = append(fi.imports, ip)
		}
		files = append(files, fi)
		return nil
	})
	require.NoError(t, err)
	return files, skipped
}

// top returns the top-level directory of a module-relative path.
func top(dir string) string { first, _, _ := strings.Cut(dir, "/"); return first }

// layers holds the rules of TestImportRules.
type layers struct {
	module   string
	forTests map[string]bool // the internal/ directories only tests import
}

// fronts are the packages built on the root package and the adapters.
var fronts = map[string]bool{"reverseproxy": true, "http3": true}

func (l *layers) isAdapter(a string) bool {
	return a != "" && a != "." && a != "cmd" && a != "internal" && a != "extconnect" && !fronts[a]
}

// isLibrary reports whether a top-level directory holds library packages,
// which link only the standard library and golang.org/x/net.
func (l *layers) isLibrary(a string) bool { return a != "cmd" && a != "http3" }

// area returns the top-level directory of a package of the module (import
// path), "." for the root package, or "" for another module.
func (l *layers) area(importPath string) string {
	if importPath == l.module {
		return "."
	}
	if rest, ok := strings.CutPrefix(importPath, l.module+"/"); ok {
		return top(rest)
	}
	return ""
}

// findTestPackages records the internal/ directories that no file other
// than a test imports.
func (l *layers) findTestPackages(files []goFile) {
	used := map[string]bool{}
	for _, f := range files {
		for _, ip := range f.imports {
			if rest, ok := strings.CutPrefix(ip, l.module+"/"); ok && !f.test() {
				used[rest] = true
			}
		}
	}
	for _, f := range files {
		if top(f.dir) == "internal" && !used[f.dir] {
			l.forTests[f.dir] = true
		}
	}
}

// check returns the rule f breaks by importing ip, or "".
func (l *layers) check(f goFile, ip string) string {
	from, to := top(f.dir), l.area(ip)
	switch {
	case to == "":
		test := f.test() || l.forTests[f.dir]
		if l.isLibrary(from) && !allowedOutside(ip, test) {
			return "a library package imports only std, golang.org/x/net and this module (tests: testify and goleak too)"
		}
	case to == "cmd" && from != "cmd":
		return "nothing outside cmd/ imports cmd/"
	case from == "." && (l.isAdapter(to) || fronts[to]):
		return "the root package never imports an adapter, reverseproxy/ or http3/"
	case l.isAdapter(from) && to != from && (l.isAdapter(to) || fronts[to]):
		return "no adapter imports another adapter, reverseproxy/ or http3/"
	case fronts[from] && to != from && (fronts[to] || l.isAdapter(to) && to != "websocket"):
		return "reverseproxy/ and http3/ import only the root package and websocket/ (and internal/, extconnect/)"
	}
	return ""
}

// allowedOutside reports whether a library package's file (a test file if
// test) may import ip, a package of another module: the standard library
// and golang.org/x/net; for tests, testify and goleak too.
func allowedOutside(ip string, test bool) bool {
	first, _, _ := strings.Cut(ip, "/")
	switch {
	case !strings.Contains(first, "."):
		return true // the standard library
	case ip == "golang.org/x/net" || strings.HasPrefix(ip, "golang.org/x/net/"):
		return true
	}
	return test && (strings.HasPrefix(ip, "github.com/stretchr/testify/") || ip == "go.uber.org/goleak")
}

// TestImportRulesCatch: the rules refuse what DESIGN.md §2 forbids, and
// let through what it allows.
func TestImportRulesCatch(t *testing.T) {
	const m = "github.com/go-upgrade/upgrade"
	l := layers{module: m, forTests: map[string]bool{"internal/wiretest": true}}
	for _, tc := range []struct {
		file, imp string
		ok        bool
	}{
		{"server.go", m + "/reverseproxy", false},
		{"server_test.go", m + "/websocket", false},
		{"dial.go", m + "/http3", false},
		{"websocket/ws.go", m + "/h2c", false},
		{"h2c/h2c_test.go", m + "/reverseproxy", false},
		{"reverseproxy/rp.go", m + "/h2c", false},
		{"reverseproxy/rp.go", m + "/http3", false},
		{"http3/h3.go", m + "/reverseproxy", false},
		{"reverseproxy/rp.go", m + "/cmd/upgrade", false},
		{"reverseproxy/rp.go", "github.com/quic-go/quic-go", false},
		{"reverseproxy/rp_test.go", "github.com/gorilla/websocket", false},
		{"websocket/ws.go", "github.com/stretchr/testify/require", false},
		{"internal/track/track.go", "github.com/stretchr/testify/require", false},
		{"extconnect/extconnect.go", "golang.org/x/text/cases", false},

		{"reverseproxy/rp.go", m, true},
		{"reverseproxy/rp.go", m + "/websocket", true},
		{"reverseproxy/rp.go", m + "/internal/h2stream", true},
		{"reverseproxy/rp_test.go", m + "/extconnect", true},
		{"http3/h3.go", "github.com/quic-go/quic-go", true},
		{"cmd/upgrade/main.go", m + "/reverseproxy", true},
		{"websocket/ws_test.go", "go.uber.org/goleak", true},
		{"internal/wiretest/conn.go", "github.com/stretchr/testify/require", true},
		{"server.go", "golang.org/x/net/http/httpguts", true},
	} {
		f := goFile{name: tc.file, dir: path.Dir(tc.file)}
		why := l.check(f, tc.imp)
		assert.Equal(t, tc.ok, why == "", "%s importing %s: %q", tc.file, tc.imp, why)
	}
}

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
//   - the root package never imports an adapter nor the CLI;
//   - no adapter imports another adapter, except that http3/ may import
//     websocket/ (DESIGN.md §2);
//   - nothing outside cmd/ imports anything under cmd/;
//   - QUIC (github.com/quic-go/...) enters only through http3/ and cmd/.
//
// An adapter is a package in a top-level directory other than cmd/,
// internal/ and extconnect/ (websocket/, h2c/); extconnect is not a
// protocol but a process setting, which any program or test binary that
// serves HTTP/2 extended CONNECT imports. Directories with a go.mod of their own
// (bench/, examples/…) are other modules, and node_modules and testdata
// hold no package of this module: they are skipped.
func TestImportRules(t *testing.T) {
	t.Parallel()
	gomod, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	var module string
	for _, l := range strings.Split(string(gomod), "\n") {
		if m, ok := strings.CutPrefix(strings.TrimSpace(l), "module "); ok {
			module = strings.TrimSpace(m)
		}
	}
	require.NotEmpty(t, module, "no module line in go.mod")

	type file struct {
		name    string // slash-separated, relative to the module root
		dir     string // its directory: "." for the root package
		imports []string
	}
	var files []file
	var skipped []string
	fset := token.NewFileSet()
	err = filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
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
		fi := file{name: name, dir: path.Dir(name)}
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
	assert.Contains(t, skipped, "bench", "bench/ is a module of its own")
	assert.Contains(t, skipped, "examples/wsframing", "examples/wsframing is a module of its own")

	// top returns the top-level directory of a module-relative path.
	top := func(dir string) string { first, _, _ := strings.Cut(dir, "/"); return first }
	// area returns the top-level directory of a package of the module
	// (import path), "." for the root package, or "" for another module.
	area := func(importPath string) string {
		if importPath == module {
			return "."
		}
		if rest, ok := strings.CutPrefix(importPath, module+"/"); ok {
			return top(rest)
		}
		return ""
	}
	isAdapter := func(a string) bool {
		return a != "" && a != "." && a != "cmd" && a != "internal" && a != "extconnect"
	}

	adapters := map[string]bool{}
	counts := map[string]int{}
	for _, f := range files {
		counts[top(f.dir)]++
		if a := top(f.dir); isAdapter(a) {
			adapters[a] = true
		}
	}
	require.True(t, adapters["websocket"] && adapters["h2c"], "adapters found: %v", adapters)
	require.Positive(t, counts["."], "no file of the root package found")
	require.Positive(t, counts["cmd"], "no file under cmd/ found")

	var broken []string
	for _, f := range files {
		from := top(f.dir)
		for _, ip := range f.imports {
			to := area(ip)
			switch {
			case strings.HasPrefix(ip, "github.com/quic-go/") && from != "http3" && from != "cmd":
				broken = append(broken, f.name+" imports "+ip+": QUIC enters only through http3/ and cmd/")
			case to == "":
				// Another module.
			case to == "cmd" && from != "cmd":
				broken = append(broken, f.name+" imports "+ip+": nothing outside cmd/ imports cmd/")
			case from == "." && isAdapter(to):
				broken = append(broken, f.name+" imports "+ip+": the root package never imports an adapter")
			case from == "http3" && to == "websocket":
				// http3/ may import root and websocket/.
			case isAdapter(from) && isAdapter(to) && to != from:
				broken = append(broken, f.name+" imports "+ip+": no adapter imports another adapter")
			}
		}
	}
	slices.Sort(broken)
	assert.Empty(t, broken, "import rules (DESIGN.md §2) broken:\n\t%s", strings.Join(broken, "\n\t"))
	t.Logf("%d files checked; adapters %v; other modules skipped: %v", len(files), adapters, skipped)
}

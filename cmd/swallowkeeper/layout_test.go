package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeLayoutMatchesTheTree keeps the README's "Layout" section true:
// every Go package directory under internal/ and cmd/ is listed there, and
// every directory listed exists.
func TestReadmeLayoutMatchesTheTree(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Layout\n")
	if !ok {
		t.Fatal("README.md has no \"## Layout\" section")
	}
	_, block, _ := strings.Cut(section, "```\n")
	block, _, _ = strings.Cut(block, "```")
	entry := regexp.MustCompile(`^(\S+/)\s`)
	var listed []string
	for _, line := range strings.Split(block, "\n") {
		if m := entry.FindStringSubmatch(line); m != nil {
			listed = append(listed, strings.TrimSuffix(m[1], "/"))
		}
	}
	if len(listed) == 0 {
		t.Fatal("README.md's layout block lists no directories")
	}

	var packages []string
	for _, top := range []string{"cmd", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, top), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == "testdata" {
				return filepath.SkipDir
			}
			if !d.IsDir() && strings.HasSuffix(p, ".go") {
				dir, _ := filepath.Rel(root, filepath.Dir(p))
				dir = filepath.ToSlash(dir)
				if !slices.Contains(packages, dir) {
					packages = append(packages, dir)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range packages {
		if !slices.Contains(listed, dir) {
			t.Errorf("package %s/ is not in README.md's layout section", dir)
		}
	}
	for _, dir := range listed {
		if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
			t.Errorf("README.md's layout lists %s/, which does not exist", dir)
		}
	}
}

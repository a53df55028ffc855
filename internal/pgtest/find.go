package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNotFound is returned by FindBinary when no candidate exists.
var ErrNotFound = errors.New("pgtest: binary not found")

// FindBinary locates a PostgreSQL (or related) executable by name. It looks
// in PATH, then in `pg_config --bindir`, then in the versioned directories
// that Debian/Ubuntu (/usr/lib/postgresql/*/bin) and the PGDG RPMs
// (/usr/pgsql-*/bin) use, newest version first, then /usr/sbin and /sbin.
func FindBinary(name string) (string, error) {
	if strings.ContainsRune(name, os.PathSeparator) {
		return "", fmt.Errorf("pgtest: binary name %q must not contain a path separator", name)
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	var dirs []string
	if pgc, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(pgc, "--bindir").Output(); err == nil {
			dirs = append(dirs, strings.TrimSpace(string(out)))
		}
	}
	dirs = append(dirs, versionedDirs("/usr/lib/postgresql/*/bin")...)
	dirs = append(dirs, versionedDirs("/usr/pgsql-*/bin")...)
	dirs = append(dirs, "/usr/sbin", "/sbin")
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if isExecutable(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s (searched PATH, pg_config --bindir, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin)", ErrNotFound, name)
}

// serverBinaries returns postgres and initdb from the same installation.
func serverBinaries() (postgres, initdb string, err error) {
	pg, err := FindBinary("postgres")
	if err != nil {
		return "", "", err
	}
	real, err := filepath.EvalSymlinks(pg)
	if err != nil {
		return "", "", fmt.Errorf("pgtest: resolve %s: %w", pg, err)
	}
	dir := filepath.Dir(real)
	initdb = filepath.Join(dir, "initdb")
	if !isExecutable(initdb) {
		if initdb, err = FindBinary("initdb"); err != nil {
			return "", "", err
		}
	}
	return real, initdb, nil
}

// versionedDirs expands pattern and sorts the matches by the first number
// in their path, highest first.
func versionedDirs(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	version := func(p string) float64 {
		for _, part := range strings.Split(p, string(os.PathSeparator)) {
			part = strings.TrimPrefix(part, "pgsql-")
			if v, err := strconv.ParseFloat(part, 64); err == nil {
				return v
			}
		}
		return -1
	}
	sort.SliceStable(m, func(i, j int) bool { return version(m[i]) > version(m[j]) })
	return m
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

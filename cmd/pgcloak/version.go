package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version is set at link time: go build -ldflags "-X main.version=v1.2.3".
// When empty, the module version from the build information is used.
var version string

func init() {
	register("version", "Print the version, commit and Go version.", func() any { return &versionCmd{} })
}

// versionCmd: pgcloak version
type versionCmd struct{}

func (c *versionCmd) Run(g *globals) error {
	v := buildVersion()
	fmt.Fprintf(g.stdout, "pgcloak %s\ncommit  %s\ngo      %s %s/%s\n", v.version, v.commit, v.goVersion, runtime.GOOS, runtime.GOARCH)
	return nil
}

type versionInfo struct {
	version, commit, goVersion string
}

func buildVersion() versionInfo {
	v := versionInfo{version: version, commit: "unknown", goVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		if v.version == "" {
			v.version = "(unknown)"
		}
		return v
	}
	if v.version == "" {
		v.version = info.Main.Version // "(devel)" for builds inside the repository
	}
	if v.version == "" {
		v.version = "(devel)"
	}
	var modified, when string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			v.commit = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		case "vcs.time":
			when = " " + s.Value
		}
	}
	if v.commit != "unknown" {
		v.commit += when + modified
	}
	return v
}

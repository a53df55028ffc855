package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/alecthomas/kong"
)

// Exit codes (documented in the README):
//
//	0  success; for serve and dev: a clean shutdown after SIGINT/SIGTERM
//	1  runtime error: cannot listen, cannot reach a dependency, the proxy
//	   failed, or a second SIGINT/SIGTERM cut a graceful shutdown short
//	2  usage or configuration error: unknown command or flag, a configuration
//	   file that cannot be read or has problems (printed to stderr as
//	   "FILE:LINE: message", one per line), unusable TLS files, a destructive
//	   key verb without --yes when stdin is not a terminal
//	3  refused by the key lifecycle: an illegal state transition, a deletion
//	   window outside 7–30 days, a key ring that does not match the config,
//	   rows that still reference a version being retired
//	130 reencrypt and keys compromise interrupted by SIGINT/SIGTERM: the job
//	   is paused; running the command again resumes it
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// command is one top-level verb. newCmd returns a fresh kong command struct
// whose Run method takes *globals (and returns error).
type command struct {
	name, help string
	newCmd     func() any
}

// commands is filled by the init functions of the command files and only
// read afterwards.
var commands []command

// register adds a top-level verb; call it from an init function in the
// verb's own file.
func register(name, help string, newCmd func() any) {
	commands = append(commands, command{name: name, help: help, newCmd: newCmd})
}

// kongExit carries kong's exit code (after --help) out of Parse.
type kongExit int

// run parses args, runs the selected command and returns the exit code.
// ctx cancels long-running commands as SIGINT/SIGTERM do.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	g := &globals{ctx: ctx, stdout: stdout, stderr: stderr}
	opts := []kong.Option{
		kong.Name("pgcloak"),
		kong.Description("pgcloak is a transparent encryption proxy for PostgreSQL."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(kongExit(c)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
		kong.Bind(g),
	}
	sorted := append([]command(nil), commands...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		opts = append(opts, kong.DynamicCommand(c.name, c.help, "", c.newCmd()))
	}
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(kongExit)
			if !ok {
				panic(r)
			}
			code = int(c)
		}
	}()
	parser, err := kong.New(&g.flags, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "pgcloak: internal error: %v\n", err)
		return exitRuntime
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "pgcloak: %v\nRun 'pgcloak --help' for usage.\n", err)
		return exitUsage
	}
	return exitCode(kctx.Run(), stderr)
}

// exitCode prints err (unless already reported) and maps it to an exit code.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if !ee.reported {
			fmt.Fprintf(stderr, "pgcloak: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "pgcloak: %v\n", err)
	return exitRuntime
}

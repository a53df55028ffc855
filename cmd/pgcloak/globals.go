package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"

	"github.com/pgcloak/pgcloak/config"
)

// globalFlags are accepted before or after any command.
type globalFlags struct {
	Config    string `help:"Configuration file (default: ./${default})." placeholder:"FILE" env:"PGCLOAK_CONFIG" default:"pgcloak.toml"`
	LogLevel  string `help:"Log level: trace, debug, info, warn or error (default: level in the log section of the configuration, then info)." placeholder:"LEVEL"`
	LogFormat string `help:"Log format: json or console (default: format in the log section, then json unless stderr is a terminal)." placeholder:"FORMAT"`
}

var (
	logLevels  = []string{"trace", "debug", "info", "warn", "error"}
	logFormats = []string{"json", "console"}
)

// Validate is called by kong after parsing; an error is a usage error.
func (f *globalFlags) Validate() error {
	if f.LogLevel != "" && !slices.Contains(logLevels, f.LogLevel) {
		return fmt.Errorf("--log-level: %q is not one of trace, debug, info, warn, error", f.LogLevel)
	}
	if f.LogFormat != "" && !slices.Contains(logFormats, f.LogFormat) {
		return fmt.Errorf("--log-format: %q is not one of json, console", f.LogFormat)
	}
	return nil
}

// globals is what every command's Run receives: the flags, the process
// context and the output streams (so tests can run commands in-process).
type globals struct {
	flags  globalFlags
	ctx    context.Context
	stdout io.Writer // command output
	stderr io.Writer // logs and diagnostics
}

// exitError carries an exit code; reported means the message was already
// printed.
type exitError struct {
	code     int
	err      error
	reported bool
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr makes err a usage/configuration error (exit code 2).
func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// loadConfig loads and validates the configuration file at path ("" = the
// --config flag). Problems are printed to stderr, one "FILE:LINE: message"
// per line; the returned error then has exit code 2. With skipFiles, the
// files the configuration names are not checked.
func (g *globals) loadConfig(path string, skipFiles bool) (*config.Config, error) {
	if path == "" {
		path = g.flags.Config
	}
	var cfg *config.Config
	var err error
	if skipFiles {
		var data []byte
		if data, err = os.ReadFile(path); err == nil {
			cfg, err = config.Parse(path, data)
		}
	} else {
		cfg, err = config.Load(path)
	}
	if err == nil {
		return cfg, nil
	}
	var probs config.Problems
	if errors.As(err, &probs) {
		for _, p := range probs {
			fmt.Fprintln(g.stderr, p.String())
		}
		return nil, &exitError{code: exitUsage, err: err, reported: true}
	}
	return nil, usageErr(err)
}

// logger builds the process logger: flags win over the [log] section, which
// wins over the defaults (info; json unless stderr is a terminal).
func (g *globals) logger(fromFile config.Log) zerolog.Logger {
	level := firstNonEmpty(g.flags.LogLevel, fromFile.Level, "info")
	format := firstNonEmpty(g.flags.LogFormat, fromFile.Format)
	if format == "" {
		format = "json"
		if isTerminal(g.stderr) {
			format = "console"
		}
	}
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel // unreachable: flags and config are validated
	}
	var w io.Writer = g.stderr
	if _, ok := w.(*os.File); !ok {
		w = zerolog.SyncWriter(w) // sessions log concurrently; a file write is atomic, a buffer is not
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !isTerminal(g.stderr)}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// shutdownSignals returns a context that is cancelled on the first SIGINT or
// SIGTERM (or when g.ctx ends). A second signal calls forceExit. release
// stops listening for signals; call it when the command is done.
func (g *globals) shutdownSignals(log zerolog.Logger, forceExit func()) (ctx context.Context, release func()) {
	ctx, cancel := context.WithCancel(g.ctx)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			log.Info().Str("signal", s.String()).Msg("shutting down; send the signal again to exit at once")
			cancel()
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			log.Warn().Str("signal", s.String()).Msg("second signal: exiting without waiting")
			forceExit()
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel()
	}
}

// forceExit ends the process at once after a second signal.
func forceExit() { os.Exit(exitRuntime) }

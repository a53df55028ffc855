package proxy

import (
	"fmt"
	"os"
	"testing"
)

// testEventLoops is what startProxy puts in Opts.EventLoops. TestMain runs
// the whole suite twice: once with the default (the event loop serves every
// plain-socket session on Linux) and once with the event loop disabled, so
// that both relays are held to the same behaviour.
var testEventLoops int

func TestMain(m *testing.M) {
	if code := m.Run(); code != 0 {
		os.Exit(code)
	}
	if testing.Short() {
		os.Exit(0)
	}
	fmt.Println("proxy: running the suite again with the event loop disabled (goroutine relay)")
	testEventLoops = -1
	os.Exit(m.Run())
}

package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
	"time"
)

// freePort asks the kernel for a free loopback TCP port. Another process
// may take it before the caller binds it; the callers' start-up checks
// report that clearly.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitTCP waits until addr accepts a TCP connection, the process behind
// exited is done (then it returns an error), or ctx ends.
func waitTCP(ctx context.Context, addr string, exited <-chan struct{}) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return errors.New("process exited before accepting connections")
		case <-ctx.Done():
			return fmt.Errorf("not accepting connections on %s: %w", addr, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// unprivileged is the OS user that daemons refusing to run as root
// (PgBouncer, PostgreSQL) run as when the harness is root.
type unprivileged struct {
	cred *syscall.Credential // nil when the harness is not root
}

func lookupUnprivileged() (unprivileged, error) {
	if os.Geteuid() != 0 {
		return unprivileged{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return unprivileged{}, fmt.Errorf("bench: running as root needs the OS user postgres: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return unprivileged{}, fmt.Errorf("bench: user postgres: bad uid/gid %q/%q", u.Uid, u.Gid)
	}
	return unprivileged{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}, nil
}

// apply makes cmd run as the user.
func (u unprivileged) apply(cmd *exec.Cmd) {
	if u.cred == nil {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = u.cred
}

// own hands paths over to the user (no-op when not root).
func (u unprivileged) own(paths ...string) error {
	if u.cred == nil {
		return nil
	}
	for _, p := range paths {
		if err := os.Chown(p, int(u.cred.Uid), int(u.cred.Gid)); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}

// stopProcess sends sig, waits up to grace for done, then kills.
func stopProcess(cmd *exec.Cmd, done <-chan struct{}, sig os.Signal, grace time.Duration) {
	if cmd.Process == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

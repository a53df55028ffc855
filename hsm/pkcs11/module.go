package pkcs11

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"

	p11 "github.com/miekg/pkcs11"
)

// A PKCS#11 library has process-wide state: C_Initialize and C_Finalize act
// on the whole process, and logging in on one session logs in every session
// of the process on that token (logging out, likewise, logs all of them out).
// Two providers on the same module — the hsm KEK and a new key during
// `pgcloak kek rotate`, or two tests — must therefore share one loaded
// module and one login. This registry is the only package-level state.
var registry = struct {
	sync.Mutex
	mods map[string]*module
}{mods: map[string]*module{}}

// module is one loaded PKCS#11 library. Fields are guarded by registry.
type module struct {
	path string
	ctx  *p11.Ctx
	refs int
	// ownsInit: our C_Initialize succeeded (it was not already initialized
	// by someone else in this process), so C_Finalize is ours to call.
	ownsInit bool
	// logins counts open Tokens per slot; the last one to close logs out.
	logins map[uint]int
}

// openModule loads and initializes the library at path once per process and
// returns a reference; release it with closeModule.
func openModule(path string) (*module, error) {
	if path == "" {
		return nil, errors.New("pkcs11: module path is empty")
	}
	// One library reached through two paths (a symlink, a multiarch copy
	// link) is one process-wide state: key the registry by the real path.
	key := filepath.Clean(path)
	if real, err := filepath.EvalSymlinks(key); err == nil {
		key = real
	}
	registry.Lock()
	defer registry.Unlock()
	if m, ok := registry.mods[key]; ok {
		m.refs++
		return m, nil
	}
	ctx := p11.New(key)
	if ctx == nil {
		return nil, fmt.Errorf("pkcs11: cannot load module %s (missing file, or not a PKCS#11 library)", key)
	}
	owns := true
	if err := ctx.Initialize(); err != nil {
		var pe p11.Error
		if !errors.As(err, &pe) || uint(pe) != p11.CKR_CRYPTOKI_ALREADY_INITIALIZED {
			ctx.Destroy()
			return nil, fmt.Errorf("pkcs11: initialize module %s: %w", key, newError("C_Initialize", "", err, false))
		}
		owns = false
	}
	m := &module{path: key, ctx: ctx, refs: 1, ownsInit: owns, logins: map[uint]int{}}
	registry.mods[key] = m
	return m, nil
}

// closeModule drops a reference; the last one finalizes and unloads.
func closeModule(m *module) error {
	registry.Lock()
	defer registry.Unlock()
	m.refs--
	if m.refs > 0 {
		return nil
	}
	delete(registry.mods, m.path)
	var err error
	if m.ownsInit {
		if ferr := m.ctx.Finalize(); ferr != nil {
			err = fmt.Errorf("pkcs11: finalize module %s: %w", m.path, ferr)
		}
	}
	m.ctx.Destroy()
	return err
}

// addLogin records one more Token on slot.
func (m *module) addLogin(slot uint) {
	registry.Lock()
	defer registry.Unlock()
	m.logins[slot]++
}

// dropLogin records that a Token on slot closed and reports whether it was
// the last one (which must log out).
func (m *module) dropLogin(slot uint) (last bool) {
	registry.Lock()
	defer registry.Unlock()
	m.logins[slot]--
	if m.logins[slot] > 0 {
		return false
	}
	delete(m.logins, slot)
	return true
}

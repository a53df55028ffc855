package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/crypto/secret"
	"github.com/pgcloak/pgcloak/hsm"
	"github.com/pgcloak/pgcloak/hsm/awskms"
	"github.com/pgcloak/pgcloak/hsm/local"
	"github.com/pgcloak/pgcloak/hsm/pkcs11"
)

// openedKEK is a provider opened from a [kek.NAME] section.
type openedKEK interface {
	hsm.KEK
	io.Closer
}

// pinFromEnv reads the PKCS#11 user PIN from the environment variable the
// configuration names. The PIN never comes from a file or a flag.
func pinFromEnv(k config.KEK) (secret.Bytes, error) {
	pin, ok := os.LookupEnv(k.PINEnv)
	if !ok || pin == "" {
		return secret.Bytes{}, fmt.Errorf("kek %s: environment variable %s (pin_env) is not set", k.Name, k.PINEnv)
	}
	return secret.New([]byte(pin)), nil
}

func pkcs11Opts(k config.KEK) (pkcs11.Opts, error) {
	pin, err := pinFromEnv(k)
	if err != nil {
		return pkcs11.Opts{}, err
	}
	return pkcs11.Opts{Module: k.Module, TokenLabel: k.TokenLabel, PIN: pin, KeyLabel: k.KeyLabel}, nil
}

// openKEK opens the provider for one [kek.NAME] section.
func openKEK(ctx context.Context, k config.KEK) (openedKEK, error) {
	switch k.Type {
	case config.KEKPKCS11:
		o, err := pkcs11Opts(k)
		if err != nil {
			return nil, err
		}
		defer o.PIN.Zero()
		p, err := pkcs11.New(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("kek %s: %w", k.Name, err)
		}
		return p, nil
	case config.KEKLocal:
		p, err := local.New(local.Opts{KeyFile: k.KeyFile})
		if err != nil {
			return nil, fmt.Errorf("kek %s: %w", k.Name, err)
		}
		return p, nil
	case config.KEKAWSKMS:
		p, err := awskms.New(ctx, awskms.Opts{KeyID: k.KeyID, Region: k.Region, Endpoint: k.Endpoint})
		if err != nil {
			return nil, fmt.Errorf("kek %s: %w", k.Name, err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("kek %s: unknown type %q", k.Name, k.Type)
}

// openKEKs opens every configured KEK; on error the ones already opened are
// closed. The caller closes the rest with closeKEKs.
func openKEKs(ctx context.Context, cfg *config.Config) (map[string]hsm.KEK, func(), error) {
	out := make(map[string]hsm.KEK, len(cfg.KEKs))
	var closers []io.Closer
	closeAll := func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}
	for name, k := range cfg.KEKs {
		p, err := openKEK(ctx, k)
		if err != nil {
			closeAll()
			return nil, func() {}, err
		}
		out[name] = p
		closers = append(closers, p)
	}
	return out, closeAll, nil
}

// pickKEK returns the [kek.NAME] section named, or the only one.
func pickKEK(cfg *config.Config, name string) (config.KEK, error) {
	if name != "" {
		k, ok := cfg.KEKs[name]
		if !ok {
			return config.KEK{}, usageErr(fmt.Errorf("no [kek.%s] section in %s", name, cfg.File))
		}
		return k, nil
	}
	if len(cfg.KEKs) != 1 {
		return config.KEK{}, usageErr(fmt.Errorf("%s has %d [kek.*] sections: name the one to use", cfg.File, len(cfg.KEKs)))
	}
	for _, k := range cfg.KEKs {
		return k, nil
	}
	panic("unreachable")
}

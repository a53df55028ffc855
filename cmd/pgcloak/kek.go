package main

import (
	"errors"
	"fmt"

	"github.com/pgcloak/pgcloak/config"
	"github.com/pgcloak/pgcloak/hsm/local"
	"github.com/pgcloak/pgcloak/hsm/pkcs11"
)

func init() {
	register("kek", "Manage key-encryption keys (the HSM/KMS keys that wrap data keys).", func() any { return &kekCmd{} })
}

// kekCmd groups the KEK verbs.
type kekCmd struct {
	Create kekCreateCmd `cmd:"" help:"Create the KEK a [kek.NAME] section names: a non-extractable AES-256 key on the HSM token, or a dev key file."`
	Info   kekInfoCmd   `cmd:"" help:"Show the attributes of the KEK a [kek.NAME] section names (proves it is non-extractable)."`
	Rotate kekRotateCmd `cmd:"" help:"Re-wrap every DEK wrapped by one KEK under another (table data is untouched)."`
}

// kekCreateCmd: pgcloak kek create [NAME]
type kekCreateCmd struct {
	Name string `arg:"" optional:"" help:"NAME of the [kek.NAME] section (default: the only one)."`
}

func (c *kekCreateCmd) Run(g *globals) error {
	// The key file of a local KEK does not exist yet: skip file checks.
	cfg, err := g.loadConfig("", true)
	if err != nil {
		return err
	}
	k, err := pickKEK(cfg, c.Name)
	if err != nil {
		return err
	}
	switch k.Type {
	case config.KEKPKCS11:
		tok, closeTok, err := openKEKToken(g, k)
		if err != nil {
			return err
		}
		defer closeTok()
		ki, err := tok.CreateKey(g.ctx, k.KeyLabel)
		if errors.Is(err, pkcs11.ErrKeyExists) {
			return fmt.Errorf("kek %s: token %q already has a key labelled %q; pgcloak never replaces a KEK (that would orphan every wrapped DEK)", k.Name, k.TokenLabel, k.KeyLabel)
		}
		if err != nil {
			return fmt.Errorf("kek %s: %w", k.Name, err)
		}
		fmt.Fprintf(g.stdout, "created kek %s on token %q\n", k.Name, k.TokenLabel)
		printKeyInfo(g, ki)
		return nil
	case config.KEKLocal:
		if err := local.Generate(k.KeyFile); err != nil {
			return fmt.Errorf("kek %s: %w", k.Name, err)
		}
		fmt.Fprintf(g.stdout, "created kek %s: %s (mode 0600; development only: refused for confidential and restricted data)\n", k.Name, k.KeyFile)
		return nil
	case config.KEKAWSKMS:
		return usageErr(fmt.Errorf("kek %s: AWS KMS keys are created in AWS (aws kms create-key), not by pgcloak; then set key_id and check access with 'pgcloak kek info %s'", k.Name, k.Name))
	}
	return usageErr(fmt.Errorf("kek %s: unknown type %q", k.Name, k.Type))
}

// kekInfoCmd: pgcloak kek info [NAME]
type kekInfoCmd struct {
	Name string `arg:"" optional:"" help:"NAME of the [kek.NAME] section (default: the only one)."`
}

func (c *kekInfoCmd) Run(g *globals) error {
	cfg, err := g.loadConfig("", false)
	if err != nil {
		return err
	}
	k, err := pickKEK(cfg, c.Name)
	if err != nil {
		return err
	}
	if k.Type == config.KEKPKCS11 {
		tok, closeTok, err := openKEKToken(g, k)
		if err != nil {
			return err
		}
		defer closeTok()
		ki, err := tok.KeyInfo(g.ctx, k.KeyLabel)
		if err != nil {
			return fmt.Errorf("kek %s: %w", k.Name, err)
		}
		fmt.Fprintf(g.stdout, "kek %s: pkcs11 token %q\n", k.Name, k.TokenLabel)
		printKeyInfo(g, ki)
		return nil
	}
	// local and awskms: opening the provider proves the key is usable
	// (awskms does a wrap/unwrap round trip).
	p, err := openKEK(g.ctx, k)
	if err != nil {
		return err
	}
	defer p.Close()
	fmt.Fprintf(g.stdout, "kek %s: type %s, usable\n", k.Name, k.Type)
	return nil
}

// openKEKToken logs in to the token of a pkcs11 [kek.NAME] section with the
// PIN from its pin_env (a missing PIN is a usage error).
func openKEKToken(g *globals, k config.KEK) (*pkcs11.Token, func(), error) {
	o, err := pkcs11Opts(k)
	if err != nil {
		return nil, nil, usageErr(err)
	}
	defer o.PIN.Zero()
	tok, err := pkcs11.OpenToken(g.ctx, o)
	if err != nil {
		return nil, nil, fmt.Errorf("kek %s: %w", k.Name, err)
	}
	return tok, func() { _ = tok.Close() }, nil
}

func printKeyInfo(g *globals, ki pkcs11.KeyInfo) {
	yn := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(g.stdout, "  label        %s\n  id           %s\n  bits         %d\n", ki.Label, ki.ID, ki.Bits)
	fmt.Fprintf(g.stdout, "  token        %s\n  sensitive    %s\n  extractable  %s\n  never-extractable %s\n",
		yn(ki.Token), yn(ki.Sensitive), yn(ki.Extractable), yn(ki.NeverExtractable))
	fmt.Fprintf(g.stdout, "  encrypt      %s\n  decrypt      %s\n", yn(ki.Encrypt), yn(ki.Decrypt))
}

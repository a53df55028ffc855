package hsmtest

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/internal/pgtest"
)

func TestTokenLogin(t *testing.T) {
	tok := New(t, "hsmtest-login")
	if got := os.Getenv(ConfEnv); got != tok.ConfPath {
		t.Fatalf("%s = %q, want %q", ConfEnv, got, tok.ConfPath)
	}
	if tok.PIN == tok.SOPIN || len(tok.PIN) < 16 {
		t.Fatal("PINs are not independent random values")
	}

	p := pkcs11.New(tok.Module)
	if p == nil {
		t.Fatalf("cannot load %s", tok.Module)
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer p.Destroy()
	defer p.Finalize()
	slot, ok := findSlot(t, p, tok.Label)
	if !ok {
		t.Fatalf("no token labelled %q", tok.Label)
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(s)

	err = p.Login(s, pkcs11.CKU_USER, "00"+tok.PIN)
	var perr pkcs11.Error
	if !errors.As(err, &perr) || perr != pkcs11.CKR_PIN_INCORRECT {
		t.Fatalf("wrong PIN: got %v, want CKR_PIN_INCORRECT", err)
	}
	if err := p.Login(s, pkcs11.CKU_USER, tok.PIN); err != nil {
		t.Fatalf("login: %v", err)
	}
	// The token works: generate an AES key on it.
	_, err = p.GenerateKey(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "k"),
		})
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	if err := p.Logout(s); err != nil {
		t.Fatal(err)
	}
}

func TestTokenVisibleToChildProcess(t *testing.T) {
	pgtest.Require(t, "softhsm2-util")
	tok, err := NewToken(t.Context(), "hsmtest-child")
	if err != nil {
		if errors.Is(err, ErrNoModule) {
			pgtest.Missing(t, "%v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tok.Close() })
	util, _ := pgtest.FindBinary("softhsm2-util")
	cmd := exec.Command(util, "--show-slots")
	cmd.Env = append(os.Environ(), tok.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("show slots: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "hsmtest-child") {
		t.Fatalf("token not listed:\n%s", out)
	}
	if strings.Contains(string(out), tok.PIN) {
		t.Fatal("PIN in output")
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tok.Dir); !os.IsNotExist(err) {
		t.Fatalf("token dir still exists: %v", err)
	}
}

func findSlot(t *testing.T, p *pkcs11.Ctx, label string) (uint, bool) {
	t.Helper()
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimRight(ti.Label, " \x00") == label {
			return s, true
		}
	}
	return 0, false
}

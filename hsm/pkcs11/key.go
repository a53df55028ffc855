package pkcs11

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/hsm"
)

// KeyInfo describes a secret key on the token: enough for the CLI and the
// tests to show that a KEK can never leave it.
type KeyInfo struct {
	Label string
	ID    string // CKA_ID, hex
	Bits  int    // CKA_VALUE_LEN × 8

	Token            bool // CKA_TOKEN: persistent on the token
	Private          bool // CKA_PRIVATE: visible only after login
	Sensitive        bool // CKA_SENSITIVE: value never readable in clear
	Extractable      bool // CKA_EXTRACTABLE: may be exported with C_WrapKey
	AlwaysSensitive  bool // CKA_ALWAYS_SENSITIVE
	NeverExtractable bool // CKA_NEVER_EXTRACTABLE
	Encrypt          bool // CKA_ENCRYPT
	Decrypt          bool // CKA_DECRYPT
	Wrap             bool // CKA_WRAP
	Unwrap           bool // CKA_UNWRAP
}

// maxLabelLen bounds labels (CKA_LABEL has no limit in the standard; tokens
// do, and a KEK label is a short name).
const maxLabelLen = 128

// findKey returns the one AES secret key labelled label visible on h. With
// runtime set (serving Wrap/Unwrap, the key was found before), a missing or
// ambiguous key also wraps hsm.ErrUnavailable.
func (t *Token) findKey(h p11.SessionHandle, label string, runtime bool) (p11.ObjectHandle, error) {
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	objs, err := t.find(h, tmpl, runtime)
	if err != nil {
		return 0, err
	}
	switch len(objs) {
	case 1:
		return objs[0], nil
	case 0:
		if runtime {
			return 0, fmt.Errorf("%w: token %q no longer shows the AES key %q (token reset or replaced, or key deleted): %w",
				ErrKeyNotFound, t.label, label, hsm.ErrUnavailable)
		}
		return 0, fmt.Errorf("%w: token %q has no AES secret key labelled %q (create one with `pgcloak kek create`)",
			ErrKeyNotFound, t.label, label)
	default:
		err := fmt.Errorf("pkcs11: token %q has several AES keys labelled %q; labels must be unique", t.label, label)
		if runtime {
			err = fmt.Errorf("%w: %w", err, hsm.ErrUnavailable)
		}
		return 0, err
	}
}

// find lists up to two objects matching tmpl (two are enough to tell
// "ambiguous").
func (t *Token) find(h p11.SessionHandle, tmpl []*p11.Attribute, runtime bool) ([]p11.ObjectHandle, error) {
	if err := t.ctx.FindObjectsInit(h, tmpl); err != nil {
		return nil, newError("C_FindObjectsInit", t.label, err, runtime)
	}
	objs, _, err := t.ctx.FindObjects(h, 2)
	ferr := t.ctx.FindObjectsFinal(h)
	if err != nil {
		return nil, newError("C_FindObjects", t.label, err, runtime)
	}
	if ferr != nil {
		return nil, newError("C_FindObjectsFinal", t.label, ferr, runtime)
	}
	return objs, nil
}

// KeyInfo reads the attributes of the AES key labelled label.
func (t *Token) KeyInfo(ctx context.Context, label string) (KeyInfo, error) {
	var ki KeyInfo
	err := t.do(ctx, func(h p11.SessionHandle) error {
		k, err := t.findKey(h, label, false)
		if err != nil {
			return err
		}
		ki, err = t.readInfo(h, k)
		return err
	})
	return ki, err
}

func (t *Token) readInfo(h p11.SessionHandle, k p11.ObjectHandle) (KeyInfo, error) {
	bools := []uint{
		p11.CKA_TOKEN, p11.CKA_PRIVATE, p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE,
		p11.CKA_ALWAYS_SENSITIVE, p11.CKA_NEVER_EXTRACTABLE,
		p11.CKA_ENCRYPT, p11.CKA_DECRYPT, p11.CKA_WRAP, p11.CKA_UNWRAP,
	}
	tmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_LABEL, nil),
		p11.NewAttribute(p11.CKA_ID, nil),
		p11.NewAttribute(p11.CKA_VALUE_LEN, nil),
	}
	for _, a := range bools {
		tmpl = append(tmpl, p11.NewAttribute(a, nil))
	}
	attrs, err := t.ctx.GetAttributeValue(h, k, tmpl)
	if err != nil {
		return KeyInfo{}, newError("C_GetAttributeValue", t.label, err, false)
	}
	var ki KeyInfo
	flags := map[uint]*bool{
		p11.CKA_TOKEN: &ki.Token, p11.CKA_PRIVATE: &ki.Private,
		p11.CKA_SENSITIVE: &ki.Sensitive, p11.CKA_EXTRACTABLE: &ki.Extractable,
		p11.CKA_ALWAYS_SENSITIVE: &ki.AlwaysSensitive, p11.CKA_NEVER_EXTRACTABLE: &ki.NeverExtractable,
		p11.CKA_ENCRYPT: &ki.Encrypt, p11.CKA_DECRYPT: &ki.Decrypt,
		p11.CKA_WRAP: &ki.Wrap, p11.CKA_UNWRAP: &ki.Unwrap,
	}
	for _, a := range attrs {
		switch a.Type {
		case p11.CKA_LABEL:
			ki.Label = string(a.Value)
		case p11.CKA_ID:
			ki.ID = hex.EncodeToString(a.Value)
		case p11.CKA_VALUE_LEN:
			ki.Bits = 8 * int(ulong(a.Value))
		default:
			if f, ok := flags[a.Type]; ok {
				*f = len(a.Value) == 1 && a.Value[0] != 0
			}
		}
	}
	return ki, nil
}

// ulong decodes a CK_ULONG attribute value (native byte order and size).
func ulong(b []byte) uint64 {
	switch len(b) {
	case 8:
		return binary.NativeEndian.Uint64(b)
	case 4:
		return uint64(binary.NativeEndian.Uint32(b))
	}
	return 0
}

// CreateKey generates the KEK on the token: a persistent (CKA_TOKEN),
// private, sensitive, non-extractable AES-256 key allowed to encrypt and
// decrypt and nothing else (no CKA_WRAP/CKA_UNWRAP: pgcloak hands the DEK to
// C_Encrypt, it never asks the token to export or import keys; no sign,
// verify or derive), with a random 16-byte CKA_ID. It refuses when any
// object already carries label (ErrKeyExists). Two concurrent CreateKey
// calls for one label are not serialized by the token; run one at a time.
func (t *Token) CreateKey(ctx context.Context, label string) (KeyInfo, error) {
	if label == "" || len(label) > maxLabelLen {
		return KeyInfo{}, fmt.Errorf("pkcs11: key label must be 1 to %d bytes", maxLabelLen)
	}
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return KeyInfo{}, fmt.Errorf("pkcs11: read random key id: %w", err)
	}
	var ki KeyInfo
	err := t.withRW(ctx, func(h p11.SessionHandle) error {
		existing, err := t.find(h, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, label)}, false)
		if err != nil {
			return err
		}
		if len(existing) > 0 {
			return fmt.Errorf("%w: token %q, label %q; refusing to create a second key", ErrKeyExists, t.label, label)
		}
		tmpl := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
			p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
			p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
			p11.NewAttribute(p11.CKA_LABEL, label),
			p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_TOKEN, true),
			p11.NewAttribute(p11.CKA_PRIVATE, true),
			p11.NewAttribute(p11.CKA_SENSITIVE, true),
			p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
			p11.NewAttribute(p11.CKA_ENCRYPT, true),
			p11.NewAttribute(p11.CKA_DECRYPT, true),
			p11.NewAttribute(p11.CKA_WRAP, false),
			p11.NewAttribute(p11.CKA_UNWRAP, false),
			p11.NewAttribute(p11.CKA_SIGN, false),
			p11.NewAttribute(p11.CKA_VERIFY, false),
			p11.NewAttribute(p11.CKA_DERIVE, false),
		}
		k, err := t.ctx.GenerateKey(h, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl)
		if err != nil {
			return newError("C_GenerateKey", t.label, err, false)
		}
		ki, err = t.readInfo(h, k)
		return err
	})
	if err != nil {
		return KeyInfo{}, err
	}
	if err := checkPolicy(ki, false); err != nil {
		return ki, errors.Join(errors.New("pkcs11: the token did not honour the key template"), err)
	}
	return ki, nil
}

package pkcs11

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/hsm"
)

// The mapping table, without a token: which sentinel each return code gets
// at setup and while serving Wrap/Unwrap.
func TestErrorMapping(t *testing.T) {
	cases := []struct {
		op      string
		code    uint
		setup   error // sentinel expected at setup (nil: none)
		runtime error // sentinel expected while serving
		retry   bool
	}{
		{"C_Decrypt", p11.CKR_ENCRYPTED_DATA_INVALID, hsm.ErrUnwrap, hsm.ErrUnwrap, false},
		{"C_Decrypt", p11.CKR_ENCRYPTED_DATA_LEN_RANGE, hsm.ErrUnwrap, hsm.ErrUnwrap, false},
		{"C_Decrypt", p11.CKR_DATA_INVALID, hsm.ErrUnwrap, hsm.ErrUnwrap, false},
		{"C_Decrypt", ckrAEADDecryptFailed, hsm.ErrUnwrap, hsm.ErrUnwrap, false},
		{"C_Encrypt", p11.CKR_DATA_LEN_RANGE, nil, hsm.ErrUnavailable, false},
		{"C_Decrypt", p11.CKR_DEVICE_ERROR, hsm.ErrUnavailable, hsm.ErrUnavailable, true},
		{"C_Decrypt", p11.CKR_DEVICE_REMOVED, hsm.ErrUnavailable, hsm.ErrUnavailable, true},
		{"C_Encrypt", p11.CKR_TOKEN_NOT_PRESENT, hsm.ErrUnavailable, hsm.ErrUnavailable, true},
		{"C_EncryptInit", p11.CKR_SESSION_HANDLE_INVALID, hsm.ErrUnavailable, hsm.ErrUnavailable, true},
		{"C_DecryptInit", p11.CKR_SESSION_CLOSED, hsm.ErrUnavailable, hsm.ErrUnavailable, true},
		{"C_DecryptInit", p11.CKR_USER_NOT_LOGGED_IN, hsm.ErrUnavailable, hsm.ErrUnavailable, true},
		{"C_DecryptInit", p11.CKR_KEY_HANDLE_INVALID, hsm.ErrUnavailable, hsm.ErrUnavailable, true},
		{"C_Login", p11.CKR_PIN_INCORRECT, nil, hsm.ErrUnavailable, false},
		{"C_Login", p11.CKR_PIN_LOCKED, nil, hsm.ErrUnavailable, false},
		{"C_EncryptInit", p11.CKR_MECHANISM_INVALID, nil, hsm.ErrUnavailable, false},
		{"C_EncryptInit", p11.CKR_KEY_FUNCTION_NOT_PERMITTED, nil, hsm.ErrUnavailable, false},
		{"C_Foo", 0x8000_1234, nil, hsm.ErrUnavailable, false},
	}
	sentinels := []error{hsm.ErrUnwrap, hsm.ErrUnavailable}
	for _, c := range cases {
		name := fmt.Sprintf("%s/%#x", c.op, c.code)
		for _, mode := range []struct {
			runtime bool
			want    error
		}{{false, c.setup}, {true, c.runtime}} {
			err := newError(c.op, "tok", p11.Error(c.code), mode.runtime)
			for _, s := range sentinels {
				if errors.Is(err, s) != (s == mode.want) {
					t.Errorf("%s runtime=%t: %v: Is(%v) = %t", name, mode.runtime, err, s, errors.Is(err, s))
				}
			}
			if !errors.Is(err, p11.Error(c.code)) {
				t.Errorf("%s: the binding's error value is not reachable", name)
			}
			if !strings.Contains(err.Error(), c.op) || !strings.Contains(err.Error(), fmt.Sprintf("0x%X", c.code)) {
				t.Errorf("%s: message %q lacks the function or the code", name, err)
			}
		}
		if got := retryable(p11.Error(c.code)); got != c.retry {
			t.Errorf("%s: retryable = %t, want %t", name, got, c.retry)
		}
	}
}

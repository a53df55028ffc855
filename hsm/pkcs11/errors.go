package pkcs11

import (
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"

	"github.com/pgcloak/pgcloak/hsm"
)

// PKCS#11 v3.0 return values that github.com/miekg/pkcs11 (a v2.40 binding)
// does not name.
const (
	ckrAEADDecryptFailed = 0x00000035
)

// Sentinels for conditions New, OpenToken and CreateKey report; match them
// with errors.Is.
var (
	// ErrTokenNotFound: no slot holds a token with the configured label.
	ErrTokenNotFound = errors.New("pkcs11: token not found")
	// ErrKeyNotFound: the token has no AES secret key with the label.
	ErrKeyNotFound = errors.New("pkcs11: key not found")
	// ErrKeyExists: CreateKey found an object with the label already.
	ErrKeyExists = errors.New("pkcs11: an object with this label already exists")
	// ErrKeyPolicy: the key's attributes are unfit for a KEK (extractable,
	// not sensitive, encrypt/decrypt not allowed, not AES-256).
	ErrKeyPolicy = errors.New("pkcs11: key attributes unfit for a KEK")
	// ErrClosed: the provider or token was closed.
	ErrClosed = errors.New("pkcs11: closed")
)

// class says how the provider reacts to a PKCS#11 return value.
type class int

const (
	classOther   class = 1 // misconfiguration or a bug: reported as is, no retry
	classUnwrap  class = 2 // authentication of a wrapped key failed: hsm.ErrUnwrap
	classSession class = 3 // the session is unusable: drop it, retry on a new one
	classDevice  class = 4 // the token/device failed: drop every session, retry once
	classKey     class = 5 // the cached key handle went stale: find the key again
	classLogin   class = 6 // the token refused the PIN
)

// codeInfo names a return value and says what it means to an operator.
type codeInfo struct {
	name  string
	hint  string
	class class
}

// codes covers the return values pgcloak can meet; others print with the
// binding's name for them and count as classOther.
var codes = map[uint]codeInfo{
	p11.CKR_ENCRYPTED_DATA_INVALID:   {"CKR_ENCRYPTED_DATA_INVALID", "wrapped key failed authentication", classUnwrap},
	p11.CKR_ENCRYPTED_DATA_LEN_RANGE: {"CKR_ENCRYPTED_DATA_LEN_RANGE", "wrapped key has an impossible length", classUnwrap},
	p11.CKR_DATA_INVALID:             {"CKR_DATA_INVALID", "input rejected by the token", classUnwrap},
	p11.CKR_DATA_LEN_RANGE:           {"CKR_DATA_LEN_RANGE", "input has an impossible length", classUnwrap},
	ckrAEADDecryptFailed:             {"CKR_AEAD_DECRYPT_FAILED", "wrapped key failed authentication", classUnwrap},

	p11.CKR_SESSION_HANDLE_INVALID:     {"CKR_SESSION_HANDLE_INVALID", "session handle no longer valid", classSession},
	p11.CKR_SESSION_CLOSED:             {"CKR_SESSION_CLOSED", "session was closed", classSession},
	p11.CKR_USER_NOT_LOGGED_IN:         {"CKR_USER_NOT_LOGGED_IN", "token is not logged in", classSession},
	p11.CKR_OPERATION_ACTIVE:           {"CKR_OPERATION_ACTIVE", "another operation is active on the session", classSession},
	p11.CKR_OPERATION_NOT_INITIALIZED:  {"CKR_OPERATION_NOT_INITIALIZED", "operation was not initialized on the session", classSession},
	p11.CKR_SESSION_COUNT:              {"CKR_SESSION_COUNT", "token has no free session (lower session_pool_size?)", classDevice},
	p11.CKR_DEVICE_ERROR:               {"CKR_DEVICE_ERROR", "device error", classDevice},
	p11.CKR_DEVICE_MEMORY:              {"CKR_DEVICE_MEMORY", "device out of memory", classDevice},
	p11.CKR_DEVICE_REMOVED:             {"CKR_DEVICE_REMOVED", "device removed", classDevice},
	p11.CKR_TOKEN_NOT_PRESENT:          {"CKR_TOKEN_NOT_PRESENT", "token not present", classDevice},
	p11.CKR_TOKEN_NOT_RECOGNIZED:       {"CKR_TOKEN_NOT_RECOGNIZED", "token not recognized", classDevice},
	p11.CKR_SLOT_ID_INVALID:            {"CKR_SLOT_ID_INVALID", "slot no longer exists", classDevice},
	p11.CKR_GENERAL_ERROR:              {"CKR_GENERAL_ERROR", "general error in the PKCS#11 module", classDevice},
	p11.CKR_FUNCTION_FAILED:            {"CKR_FUNCTION_FAILED", "function failed in the PKCS#11 module", classDevice},
	p11.CKR_HOST_MEMORY:                {"CKR_HOST_MEMORY", "PKCS#11 module out of host memory", classDevice},
	p11.CKR_CRYPTOKI_NOT_INITIALIZED:   {"CKR_CRYPTOKI_NOT_INITIALIZED", "PKCS#11 module not initialized", classDevice},
	p11.CKR_KEY_HANDLE_INVALID:         {"CKR_KEY_HANDLE_INVALID", "key handle no longer valid", classKey},
	p11.CKR_OBJECT_HANDLE_INVALID:      {"CKR_OBJECT_HANDLE_INVALID", "object handle no longer valid", classKey},
	p11.CKR_PIN_INCORRECT:              {"CKR_PIN_INCORRECT", "the PIN is incorrect (check the variable named by pin_env)", classLogin},
	p11.CKR_PIN_LOCKED:                 {"CKR_PIN_LOCKED", "the user PIN is locked; the security officer must reset it", classLogin},
	p11.CKR_PIN_EXPIRED:                {"CKR_PIN_EXPIRED", "the user PIN has expired", classLogin},
	p11.CKR_PIN_INVALID:                {"CKR_PIN_INVALID", "the PIN contains invalid characters", classLogin},
	p11.CKR_PIN_LEN_RANGE:              {"CKR_PIN_LEN_RANGE", "the PIN has an invalid length", classLogin},
	p11.CKR_USER_PIN_NOT_INITIALIZED:   {"CKR_USER_PIN_NOT_INITIALIZED", "the token's user PIN was never set", classLogin},
	p11.CKR_USER_TYPE_INVALID:          {"CKR_USER_TYPE_INVALID", "invalid user type", classOther},
	p11.CKR_MECHANISM_INVALID:          {"CKR_MECHANISM_INVALID", "the token does not support CKM_AES_GCM", classOther},
	p11.CKR_MECHANISM_PARAM_INVALID:    {"CKR_MECHANISM_PARAM_INVALID", "the token rejected the AES-GCM parameters", classOther},
	p11.CKR_KEY_TYPE_INCONSISTENT:      {"CKR_KEY_TYPE_INCONSISTENT", "the key is not an AES key", classOther},
	p11.CKR_KEY_SIZE_RANGE:             {"CKR_KEY_SIZE_RANGE", "key size not supported", classOther},
	p11.CKR_KEY_FUNCTION_NOT_PERMITTED: {"CKR_KEY_FUNCTION_NOT_PERMITTED", "the key does not allow this operation (CKA_ENCRYPT/CKA_DECRYPT)", classOther},
	p11.CKR_ATTRIBUTE_SENSITIVE:        {"CKR_ATTRIBUTE_SENSITIVE", "attribute is sensitive and cannot be read", classOther},
	p11.CKR_ATTRIBUTE_TYPE_INVALID:     {"CKR_ATTRIBUTE_TYPE_INVALID", "attribute type not supported by the token", classOther},
	p11.CKR_ATTRIBUTE_VALUE_INVALID:    {"CKR_ATTRIBUTE_VALUE_INVALID", "attribute value rejected by the token", classOther},
	p11.CKR_TEMPLATE_INCONSISTENT:      {"CKR_TEMPLATE_INCONSISTENT", "key template rejected by the token", classOther},
	p11.CKR_TOKEN_WRITE_PROTECTED:      {"CKR_TOKEN_WRITE_PROTECTED", "token is write-protected", classOther},
	p11.CKR_ARGUMENTS_BAD:              {"CKR_ARGUMENTS_BAD", "bad arguments", classOther},
	p11.CKR_BUFFER_TOO_SMALL:           {"CKR_BUFFER_TOO_SMALL", "buffer too small", classOther},
}

// Error is a failed PKCS#11 call. It never carries a PIN or key bytes.
// errors.Is matches hsm.ErrUnwrap or hsm.ErrUnavailable when the failure
// belongs to one of those, and the binding's pkcs11.Error value for the
// return code.
type Error struct {
	Op   string // PKCS#11 function, e.g. "C_Decrypt"
	Code uint   // CKR_* return value
	// Token is the token label, for context in logs.
	Token string

	kind error  // hsm.ErrUnwrap, hsm.ErrUnavailable or nil
	hint string // overrides the code's hint when set
}

func (e *Error) Error() string {
	info, ok := codes[e.Code]
	name, hint := info.name, info.hint
	if !ok {
		name = p11.Error(e.Code).Error()
		hint = "unexpected return value"
	}
	if e.hint != "" {
		hint = e.hint
	}
	msg := fmt.Sprintf("pkcs11: token %q: %s: %s (%s, 0x%X)", e.Token, e.Op, hint, name, e.Code)
	if e.kind == hsm.ErrUnavailable {
		msg += ": " + hsm.ErrUnavailable.Error()
	}
	return msg
}

// Unwrap exposes the sentinel (if any) and the binding's error value.
func (e *Error) Unwrap() []error {
	if e.kind != nil {
		return []error{e.kind, p11.Error(e.Code)}
	}
	return []error{p11.Error(e.Code)}
}

// classify returns the class of err: a p11.Error's code class, classDevice
// for anything else that is not ours (a defensive default).
func classify(err error) class {
	var pe p11.Error
	if errors.As(err, &pe) {
		if info, ok := codes[uint(pe)]; ok {
			return info.class
		}
		return classOther
	}
	var e *Error
	if errors.As(err, &e) {
		if info, ok := codes[e.Code]; ok {
			return info.class
		}
	}
	return classOther
}

// newError converts a binding error from op into an *Error. runtime says
// whether it happened while serving Wrap/Unwrap (where every failure other
// than a failed authentication is ErrUnavailable) or at setup (where a wrong
// PIN or a missing mechanism is a configuration error).
func newError(op, token string, err error, runtime bool) error {
	var pe p11.Error
	if !errors.As(err, &pe) {
		return fmt.Errorf("pkcs11: token %q: %s: %w", token, op, err)
	}
	e := &Error{Op: op, Code: uint(pe), Token: token}
	c := classify(pe)
	switch {
	case c == classUnwrap && op == "C_Decrypt":
		e.kind = hsm.ErrUnwrap
	case runtime:
		// While serving Wrap/Unwrap, every other failure to use the KEK
		// means the KEK cannot serve now: callers (keycache) treat that as an
		// outage, however it came about.
		e.kind = hsm.ErrUnavailable
	case c == classSession || c == classDevice || c == classKey:
		e.kind = hsm.ErrUnavailable
	}
	return e
}

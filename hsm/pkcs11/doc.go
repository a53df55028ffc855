// Package pkcs11 is the HSM KEK provider: an AES-256 key that lives on a
// PKCS#11 token (a network HSM, a smart card, SoftHSM2 in tests) and is used
// only through the token's C_Encrypt/C_Decrypt with CKM_AES_GCM. The key
// bytes never enter this process.
//
// # Wrapped DEK format
//
// Wrap returns the versioned blob shared with hsm/local:
//
//	0x01 || IV (12 bytes) || GCM ciphertext || tag (16 bytes)
//
// The IV comes from crypto/rand (SoftHSM2 uses the caller's IV; a token that
// substitutes its own is honoured by reading it back from the GCM
// parameters). The GCM associated data given to the token is the version
// byte followed by the caller's associated data. CKM_AES_KEY_WRAP_PAD is
// not used: SoftHSM2 does not offer it through C_Encrypt, and C_WrapKey would
// need the DEK to be a token object.
//
// # Sessions, login and recovery
//
// The module is loaded and C_Initialize'd once per process (a module already
// initialized by someone else is accepted, and then not finalized by us),
// shared by every Token of the process, and finalized when the last one
// closes. The user logs in once; PKCS#11 login state belongs to the token and
// the process, so the last Token on a slot to close logs out. Operations run
// on a bounded pool of sessions (Opts.SessionPoolSize); waiting for one
// honours the ctx, but a PKCS#11 call itself cannot be interrupted.
//
// When a call fails because the session, the token or a cached handle went
// bad (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
// CKR_USER_NOT_LOGGED_IN, CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED,
// CKR_TOKEN_NOT_PRESENT, CKR_KEY_HANDLE_INVALID, …) the session is closed,
// every idle session is marked stale, and the call runs once more on a fresh
// session — logging in again if the token forgot the login. If that fails
// too, the error wraps hsm.ErrUnavailable; later calls keep trying, so the
// provider recovers without a restart once the token is back.
//
// # Error mapping
//
//	C_Decrypt: CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE,
//	  CKR_DATA_INVALID, CKR_DATA_LEN_RANGE, CKR_AEAD_DECRYPT_FAILED;
//	  CKR_GENERAL_ERROR when a probe shows the token healthy (SoftHSM2
//	  <= 2.6 reports a bad GCM tag that way); a malformed blob → hsm.ErrUnwrap
//	session, device, token, stale-handle codes    → one retry on a fresh session,
//	                                               then hsm.ErrUnavailable
//	any other failure while serving Wrap/Unwrap    → hsm.ErrUnavailable
//	  (re-login refused, key no longer visible, waiting for a session
//	  outlived the ctx, …)
//	at New/OpenToken/CreateKey: wrong PIN, missing token or key, unfit key,
//	  mechanism missing                            → configuration error, no sentinel
//	  (ErrTokenNotFound, ErrKeyNotFound, ErrKeyPolicy, ErrKeyExists, *Error)
//
// Every failed call is an *Error naming the function, the token, the return
// code and a hint; none carries a PIN or key bytes.
//
// # Memory hygiene
//
// The PIN is kept in a secret.Bytes and zeroed on Close, but the binding
// (github.com/miekg/pkcs11) takes it as a Go string and copies it into C
// memory that it frees without wiping; likewise C_Decrypt's output buffer.
// Both are short-lived heap copies inside this process.
package pkcs11

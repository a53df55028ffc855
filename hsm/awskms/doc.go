// Package awskms is the AWS KMS KEK provider: the KEK is a symmetric KMS key
// (SYMMETRIC_DEFAULT, AES-256-GCM inside KMS) that never leaves KMS; Wrap and
// Unwrap are the KMS Encrypt and Decrypt calls.
//
// # Associated data
//
// KMS authenticates associated data through the encryption context, a map
// of strings. The caller's associated data is carried under one key:
//
//	{"pgcloak:aad": base64.StdEncoding(aad)}   (padded standard base64)
//
// and an empty aad sends no encryption context at all. KMS binds the context
// to the ciphertext exactly (any change, a missing or an extra entry fails
// Decrypt). The context is not secret: CloudTrail records it, which is fine
// for pgcloak's associated data (key ring and version identifiers).
//
// # Wrapped DEK format
//
//	0x02 || KMS CiphertextBlob
//
// The version byte (0x02; 0x01 is the AES-GCM layout of hsm/pkcs11 and
// hsm/local) lets future formats coexist. Decrypt is called with the
// configured KeyId, so a blob encrypted under another KMS key fails
// (IncorrectKeyException) instead of being decrypted by whatever key it
// names.
//
// # Errors
//
//	InvalidCiphertextException, IncorrectKeyException, malformed blob → hsm.ErrUnwrap
//	throttling, 5xx, network errors, timeouts (after the SDK's retries),
//	  and every other failure while serving Wrap/Unwrap (disabled or
//	  deleted key, access denied, …)                                   → hsm.ErrUnavailable
//
// Error messages name the KMS error code and the key ID, never plaintext.
//
// # Credentials
//
// Opts.Credentials nil means the SDK's default chain (environment, shared
// config and credentials files, SSO, web identity, ECS/EC2 roles), loaded by
// github.com/aws/aws-sdk-go-v2/config. Tests pass static credentials and an
// Endpoint on loopback (see package kmstest).
package awskms

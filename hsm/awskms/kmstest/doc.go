// Package kmstest is a fake AWS KMS endpoint for tests: an httptest server
// on loopback that speaks the KMS JSON 1.1 protocol for Encrypt and Decrypt
// (X-Amz-Target TrentService.Encrypt / TrentService.Decrypt), as the AWS SDK
// sends them.
//
// Like real KMS it checks the SigV4 signature against the credentials it was
// given, binds the encryption context to the ciphertext (Decrypt with any
// other context fails with InvalidCiphertextException), refuses Decrypt with
// a KeyId other than the one that encrypted (IncorrectKeyException), and
// resolves key IDs, key ARNs and aliases. Faults can be injected: throttling,
// 5xx, dropped connections, a disabled key. No network beyond loopback.
package kmstest

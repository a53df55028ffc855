// Package pgvalue owns the values of encrypted columns as the application
// sees them: the logical PostgreSQL types pgcloak supports (text, varchar,
// int2/4/8, numeric, float4/8, bool, date, timestamp, timestamptz, uuid,
// json, jsonb, bytea), their wire metadata (type OID, type modifier, size)
// for rewriting RowDescription and ParameterDescription, and the conversion
// of one value between the client's wire format (text or binary) and the
// canonical plaintext that crypto/envelope seals (DESIGN.md §4: "the
// canonical PostgreSQL text form of the logical type").
//
// The package is pure: no I/O, no globals, no logging. It is on the hot
// path (one call per encrypted value), so the conversions append to a
// caller-supplied buffer.
//
// NULL is not a value here: a NULL parameter or result column (length -1
// on the wire) is passed through by the caller and never reaches this
// package. An empty []byte is the empty string (text) or an error (types
// for which "" is not valid input, as in PostgreSQL).
//
// Errors are *Error values carrying a SQLSTATE (Code) and a message that
// names the type but never contains the value: a value of an encrypted
// column must not reach a log or a client error.
//
// Decisions where PostgreSQL's behaviour depends on state the proxy does
// not have are documented on Canonical.
package pgvalue

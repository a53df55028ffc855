package pgvalue

import "errors"

// SQLSTATE codes returned by this package (PostgreSQL's own codes for the
// same input errors).
const (
	CodeInvalidText      = "22P02" // invalid_text_representation
	CodeStringTooLong    = "22001" // string_data_right_truncation
	CodeOutOfRange       = "22003" // numeric_value_out_of_range
	CodeDatetimeFormat   = "22007" // invalid_datetime_format
	CodeDatetimeOverflow = "22008" // datetime_field_overflow
	CodeBadEncoding      = "22021" // character_not_in_repertoire
	CodeInvalidBinary    = "22P03" // invalid_binary_representation
	CodeUntranslatable   = "22P05" // untranslatable_character
	CodeInvalidParameter = "22023" // invalid_parameter_value
	CodeFeature          = "0A000" // feature_not_supported
	CodeTooDeep          = "54001" // statement_too_complex (stack depth limit exceeded)
	CodeTZDisplacement   = "22009" // invalid_time_zone_displacement_value
)

// ErrInvalid is the sentinel every *Error matches with errors.Is: the value
// was rejected.
var ErrInvalid = errors.New("pgvalue: invalid value")

// Error is a rejected value. Msg names the type and the reason, never the
// value itself.
type Error struct {
	SQLState string // PostgreSQL SQLSTATE, e.g. "22P02"
	Msg      string // e.g. `invalid input syntax for type integer`
}

func (e *Error) Error() string { return "pgvalue: " + e.Msg }

// Code returns the SQLSTATE the proxy should send to the client.
func (e *Error) Code() string { return e.SQLState }

// Is makes errors.Is(err, ErrInvalid) true for every *Error.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

func errSyntax(t Type) error {
	return &Error{SQLState: CodeInvalidText, Msg: "invalid input syntax for type " + t.sqlName()}
}

func errRange(t Type) error {
	return &Error{SQLState: CodeOutOfRange, Msg: "value out of range for type " + t.sqlName()}
}

func errCode(code, msg string) error { return &Error{SQLState: code, Msg: msg} }

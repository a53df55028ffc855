// Package config loads pgcloak.toml into plain structs, fills in defaults and
// validates the result.
//
// Validation never stops at the first mistake: Load and Parse return every
// problem they find as a Problems value, each with the file and line it
// refers to, so that `pgcloak config check` can print them all at once.
// Unknown keys are problems too (a typo must not be silently ignored), and so
// are secrets written inline: PINs and passwords come from environment
// variables named in the file, never from the file itself.
//
// Only cmd/pgcloak imports this package. Other packages take their own Opts;
// cmd converts a Config into them.
package config

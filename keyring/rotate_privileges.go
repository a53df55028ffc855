package keyring

import (
	"context"
	"fmt"
)

// MayRotate reports whether the key store lets this Store's database role
// (current_user) rotate key rings with Rotate and RotateIfActive: lock the
// ring (an UPDATE right on keyrings), insert the new version, demote the
// active one (UPDATE of its state columns) and append the audit entries.
// It asks the database's privilege functions and changes nothing.
// Superusers and the schema owner may; the least-privilege pgcloak_proxy
// role of docs/keys.md §5 may not, pgcloak_rotator may. role is
// current_user, for messages.
func (s *Store) MayRotate(ctx context.Context) (role string, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT current_user::text,
		has_any_column_privilege('pgcloak.keyrings', 'UPDATE')
		AND has_any_column_privilege('pgcloak.audit_log', 'INSERT')
		AND bool_and(has_column_privilege('pgcloak.key_versions', need.col, need.priv))
		FROM (VALUES ('state', 'UPDATE'), ('state_changed_by', 'UPDATE'), ('state_reason', 'UPDATE'),
			('keyring_id', 'INSERT'), ('version', 'INSERT'), ('state', 'INSERT'), ('wrapped_dek', 'INSERT'),
			('dek_format', 'INSERT'), ('kek_name', 'INSERT'), ('kek_key_id', 'INSERT'), ('created_by', 'INSERT'),
			('state_changed_by', 'INSERT'), ('state_reason', 'INSERT')) AS need(col, priv)`).Scan(&role, &ok)
	if err != nil {
		return "", false, fmt.Errorf("keyring: rotation privileges: %w", err)
	}
	return role, ok, nil
}

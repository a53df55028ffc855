// Package catalog maps the configured encrypted columns onto one database's
// system catalog: for every [[column]] of pgcloak.toml it finds the table's
// OID, the column's attribute number and the column's actual SQL type
// (pg_catalog.pg_namespace, pg_class, pg_attribute; dropped attributes are
// ignored).
//
// A Catalog is an immutable snapshot of one resolution. The proxy uses it
// in two directions:
//
//   - by (table OID, attribute number), in O(1), to recognise encrypted
//     columns in a RowDescription (FieldDescription.TableOID and
//     TableAttributeNumber) and decrypt the matching DataRow fields; the
//     partitions and inheritance children of a configured table are
//     indexed too, with their own attribute numbers;
//   - by (schema, table) name, for the rewriter, which sees names in SQL
//     text. Name lookups return every configured column of that table,
//     resolved or not, so that a statement on a table created after the
//     last resolution is still recognised (fail closed).
//
// Mismatches between configuration and database are Problems, not errors:
// a missing table or column, a relation that is not a table, a column that
// is not bytea (naming its actual type), and two configured entries that
// resolve to the same attribute. Errors are reserved for failed queries.
//
// A Resolver caches one Catalog per database and re-resolves it when told
// (Invalidate, after DDL) or on a lookup miss, at most once per
// ResolverOpts.MinInterval (see Resolver.Refresh). Each resolution that
// changes anything gets a new Generation, so caches keyed by the catalog
// (rewrite plans) can tell when to drop their entries.
//
// A Source serves the Resolver's snapshots of any database of one server:
// a snapshot that needs no resolution is returned without touching the
// network; otherwise the Source resolves over a small pool for that
// database, opened from one DSN (pgcloak serve: the [keystore] dsn) with
// the database replaced, and bounded in number (least recently used idle
// pools are closed). It reports a database's Problems once per new
// Generation through a hook, for logging. *Source has the method set of
// proxy.CatalogSource; this package does not import proxy.
//
// The package does not import config: cmd/pgcloak converts config.Column
// values into Column.
package catalog

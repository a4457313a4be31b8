/**
 * Answers are indexed for search once they have ended, not while they are
 * written: an answer in `streaming` status is rewritten every flush interval
 * (a quarter of a second by default), and indexing its text each time made
 * every flush re-index every open answer's whole text so far. Now a flush
 * leaves the index alone; the answer's final text is indexed once, when its
 * status changes (to `complete`, `cancelled`, `error` or `incomplete`).
 *
 * - SQLite: the FTS5 triggers on `messages` also watch `status`, and hold only
 *   rows that are live and not streaming; rows streaming now are taken out.
 * - PostgreSQL: the generated `search_vector` is null while the row streams.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

const indexed = (row: "new" | "old") => `${row}.deleted_at IS NULL AND ${row}.status <> 'streaming'`

const sqlite = [
  `DROP TRIGGER messages_fts_insert`,
  `DROP TRIGGER messages_fts_delete`,
  `DROP TRIGGER messages_fts_update`,
  // What the old triggers indexed of the answers streaming now (their text so far).
  `INSERT INTO messages_fts (messages_fts, rowid, content)
    SELECT 'delete', rowid, content FROM messages WHERE deleted_at IS NULL AND status = 'streaming'`,
  `CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, content) SELECT new.rowid, new.content WHERE ${indexed("new")};
  END`,
  `CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) SELECT 'delete', old.rowid, old.content WHERE ${
    indexed("old")
  };
  END`,
  `CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, deleted_at, status ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) SELECT 'delete', old.rowid, old.content WHERE ${
    indexed("old")
  };
    INSERT INTO messages_fts (rowid, content) SELECT new.rowid, new.content WHERE ${indexed("new")};
  END`
]

const pg = [
  `DROP INDEX messages_search_idx`,
  `ALTER TABLE messages DROP COLUMN search_vector`,
  `ALTER TABLE messages ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    CASE WHEN status = 'streaming' THEN NULL ELSE to_tsvector('simple', webplus_search_fold(content)) END
  ) STORED`,
  `CREATE INDEX messages_search_idx ON messages USING GIN (search_vector) WHERE deleted_at IS NULL`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const statements = sql.onDialectOrElse({ pg: () => pg, orElse: () => sqlite })
  for (const statement of statements) {
    yield* sql.unsafe(statement)
  }
})

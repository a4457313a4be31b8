/**
 * What the conversation history needs to stay fast with years of chats:
 *
 * - a message count kept on each conversation (the list shows it without
 *   counting per row);
 * - an index for the root messages of a conversation (their siblings are
 *   counted for "2 / 3" like any other message's);
 * - full-text search over conversation titles and message contents: FTS5
 *   external-content tables kept in step by triggers on SQLite, generated
 *   `tsvector` columns with GIN indexes on PostgreSQL. Both index words
 *   without stemming and with Latin diacritics folded, so a query finds the
 *   same rows on either database.
 *   Soft-deleted rows are left out of the index.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

const common = [
  `ALTER TABLE conversations ADD COLUMN message_count integer NOT NULL DEFAULT 0 CHECK (message_count >= 0)`,
  // Live children of a message in sibling order: "2 / 3", and the newest branch below a message.
  `CREATE INDEX messages_children_idx ON messages (parent_id, created_at, id) WHERE deleted_at IS NULL`,
  `CREATE INDEX messages_roots_idx ON messages (conversation_id, created_at, id)
    WHERE parent_id IS NULL AND thread_id IS NULL AND deleted_at IS NULL`
]

/**
 * Latin letters with diacritics and the base letters they fold to (from their Unicode
 * decompositions), so PostgreSQL matches "cafe" and "café" as SQLite's FTS5 does
 * (`remove_diacritics`) without needing the `unaccent` extension.
 */
const accented =
  "ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿĀāĂăĄąĆćĈĉĊċČčĎďĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĨĩĪīĬĭĮįİĴĵĶķĹĺĻļĽľŃńŅņŇňŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽžſƠơƯưǍǎǏǐǑǒǓǔǕǖǗǘǙǚǛǜǞǟǠǡǦǧǨǩǪǫǬǭǰǴǵǸǹǺǻȀȁȂȃȄȅȆȇȈȉȊȋȌȍȎȏȐȑȒȓȔȕȖȗȘșȚțȞȟȦȧȨȩȪȫȬȭȮȯȰȱȲȳ"
const unaccented =
  "aaaaaaceeeeiiiinooooouuuuyaaaaaaceeeeiiiinooooouuuuyyaaaaaaccccccccddeeeeeeeeeegggggggghhiiiiiiiiijjkkllllllnnnnnnoooooorrrrrrssssssssttttuuuuuuuuuuuuwwyyyzzzzzzsoouuaaiioouuuuuuuuuuaaaaggkkoooojggnnaaaaaaeeeeiiiioooorrrruuuusstthhaaeeooooooooyy"

const pg = [
  `CREATE FUNCTION webplus_search_fold(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(translate(value, '${accented}', '${unaccented}')) $$`,
  `ALTER TABLE messages ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', webplus_search_fold(content))) STORED`,
  `CREATE INDEX messages_search_idx ON messages USING GIN (search_vector) WHERE deleted_at IS NULL`,
  `ALTER TABLE conversations ADD COLUMN search_vector tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', webplus_search_fold(title))) STORED`,
  `CREATE INDEX conversations_search_idx ON conversations USING GIN (search_vector)
    WHERE deleted_at IS NULL`
]

/**
 * An FTS5 index of `table.column` holding the rows for which `indexed` holds
 * (a condition on the columns `watched`, which with `column` decide what the index holds).
 */
const sqliteIndex = (
  table: string,
  column: string,
  watched: ReadonlyArray<string>,
  indexed: (row: "new" | "old") => string
) => {
  const fts = `${table}_fts`
  const add = `INSERT INTO ${fts} (rowid, ${column}) SELECT new.rowid, new.${column} WHERE ${indexed("new")};`
  const remove = `INSERT INTO ${fts} (${fts}, rowid, ${column})
      SELECT 'delete', old.rowid, old.${column} WHERE ${indexed("old")};`
  return [
    `CREATE VIRTUAL TABLE ${fts} USING fts5(
      ${column}, content = '${table}', content_rowid = 'rowid', tokenize = 'unicode61 remove_diacritics 2'
    )`,
    `CREATE TRIGGER ${fts}_insert AFTER INSERT ON ${table} BEGIN ${add} END`,
    `CREATE TRIGGER ${fts}_delete AFTER DELETE ON ${table} BEGIN ${remove} END`,
    `CREATE TRIGGER ${fts}_update AFTER UPDATE OF ${[column, ...watched].join(", ")} ON ${table}
      BEGIN ${remove} ${add} END`
  ]
}

const sqlite = [
  ...sqliteIndex(
    "messages",
    "content",
    ["deleted_at"],
    (row) => `${row}.deleted_at IS NULL`
  ),
  ...sqliteIndex("conversations", "title", ["deleted_at"], (row) => `${row}.deleted_at IS NULL`)
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const statements = sql.onDialectOrElse({ pg: () => [...common, ...pg], orElse: () => [...common, ...sqlite] })
  for (const statement of statements) {
    yield* sql.unsafe(statement)
  }
})

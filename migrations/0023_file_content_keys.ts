/**
 * Files' contents encrypted at rest (`FILES_ENCRYPTION`, `Files/ContentCipher.ts`): a file's row
 * keeps its content's data key, sealed under a key of `ENCRYPTION_KEYS` (`content_key_ciphertext`,
 * base64) and the id of that key (`content_key_id`). Both NULL: the content is stored as it is (every
 * file uploaded before, and those uploaded with `FILES_ENCRYPTION=off`). One is never set without
 * the other.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

const bothOrNeither = "(content_key_ciphertext IS NULL) = (content_key_id IS NULL)"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const statements = sql.onDialectOrElse({
    pg: () => [
      `ALTER TABLE files ADD COLUMN content_key_ciphertext text, ADD COLUMN content_key_id text,
        ADD CONSTRAINT files_content_key_check CHECK (${bothOrNeither})`
    ],
    // SQLite adds no table constraint to an existing table; a column's CHECK may name another column.
    orElse: () => [
      `ALTER TABLE files ADD COLUMN content_key_ciphertext text`,
      `ALTER TABLE files ADD COLUMN content_key_id text CHECK (${bothOrNeither})`
    ]
  })
  for (const statement of statements) {
    yield* sql.unsafe(statement)
  }
})

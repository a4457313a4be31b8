/**
 * Shares get details their owner can change: a `description` (plain text, up to 2,000 characters,
 * empty by default), tags (`share_tags`, each share's set; the index serves "the shares carrying
 * this tag") and `updated_at`, when the owner last changed the share (null until then).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly timestamp: string
}

const statements = (t: Types) => [
  `ALTER TABLE shares ADD COLUMN description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000)`,
  `ALTER TABLE shares ADD COLUMN updated_at ${t.timestamp}`,
  `CREATE TABLE share_tags (
    share_id ${t.id} NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
    tag text NOT NULL CHECK (length(tag) BETWEEN 1 AND 40),
    PRIMARY KEY (share_id, tag)
  )`,
  `CREATE INDEX share_tags_tag_idx ON share_tags (tag, share_id)`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const types = sql.onDialectOrElse({
    pg: (): Types => ({ id: "uuid", timestamp: "timestamptz" }),
    orElse: (): Types => ({ id: "text", timestamp: "text" })
  })
  for (const statement of statements(types)) {
    yield* sql.unsafe(statement)
  }
})

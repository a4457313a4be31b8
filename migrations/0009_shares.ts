/**
 * Shares: read-only public links to a conversation or to a file's analysis.
 *
 * A share keeps a snapshot (`content`, JSON) of what it publishes, taken when it is created:
 * what the owner writes afterwards is not published. The link's `slug` is random (128 bits) and
 * unique; revoking a share (`revoked_at`) takes the link down for good. Engagement is counted on
 * the share (`view_count`) and per reaction (`share_reactions`). Everything goes with its owner.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly timestamp: string
  readonly now: string
  readonly json: string
}

const statements = (t: Types) => [
  `CREATE TABLE shares (
    id ${t.id} PRIMARY KEY,
    user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    slug text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('conversation', 'analysis')),
    target_id ${t.id} NOT NULL,
    title text NOT NULL CHECK (length(title) <= 500),
    content ${t.json} NOT NULL,
    view_count integer NOT NULL DEFAULT 0 CHECK (view_count >= 0),
    revoked_at ${t.timestamp},
    created_at ${t.timestamp} NOT NULL DEFAULT ${t.now}
  )`,
  `CREATE INDEX shares_user_idx ON shares (user_id, created_at, id)`,
  `CREATE TABLE share_reactions (
    share_id ${t.id} NOT NULL REFERENCES shares (id) ON DELETE CASCADE,
    reaction text NOT NULL,
    count integer NOT NULL DEFAULT 0 CHECK (count >= 0),
    PRIMARY KEY (share_id, reaction)
  )`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const types = sql.onDialectOrElse({
    pg: (): Types => ({ id: "uuid", timestamp: "timestamptz", now: "now()", json: "jsonb" }),
    orElse: (): Types => ({
      id: "text",
      timestamp: "text",
      now: "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
      json: "text"
    })
  })
  for (const statement of statements(types)) {
    yield* sql.unsafe(statement)
  }
})

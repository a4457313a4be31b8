/**
 * The tokens of the model work the server does in the background for a user are counted too:
 * `usage_records.source` may also be `title` (a conversation's title), `analysis` (a file's
 * analysis), `extraction` (a knowledge-graph extraction) and `files` (the embeddings of files' text
 * for document retrieval). As 0020 did: PostgreSQL replaces the constraint; SQLite cannot change a
 * CHECK constraint in place, so there the table is rebuilt (nothing references it) with 0003's indexes.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

const sources = "source IN ('gateway', 'chat', 'graph', 'title', 'analysis', 'extraction', 'files')"

const pgUsage = [
  `ALTER TABLE usage_records DROP CONSTRAINT usage_records_source_check`,
  `ALTER TABLE usage_records ADD CONSTRAINT usage_records_source_check CHECK (${sources})`
]

/** As 0003 made it, with the wider check. */
const sqliteUsage = [
  `CREATE TABLE usage_records_next (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id text REFERENCES api_keys (id) ON DELETE SET NULL,
    model_id text REFERENCES llm_models (id) ON DELETE SET NULL,
    model_name text,
    source text NOT NULL CHECK (${sources}),
    prompt_tokens integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
  )`,
  `INSERT INTO usage_records_next (id, user_id, api_key_id, model_id, model_name, source, prompt_tokens,
    completion_tokens, created_at)
    SELECT id, user_id, api_key_id, model_id, model_name, source, prompt_tokens, completion_tokens, created_at
    FROM usage_records`,
  `DROP TABLE usage_records`,
  `ALTER TABLE usage_records_next RENAME TO usage_records`,
  `CREATE INDEX usage_records_user_idx ON usage_records (user_id, created_at)`,
  `CREATE INDEX usage_records_api_key_idx ON usage_records (api_key_id, created_at) WHERE api_key_id IS NOT NULL`,
  `CREATE INDEX usage_records_model_idx ON usage_records (model_id) WHERE model_id IS NOT NULL`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const statements = sql.onDialectOrElse({ pg: () => pgUsage, orElse: () => sqliteUsage })
  for (const statement of statements) {
    yield* sql.unsafe(statement)
  }
})

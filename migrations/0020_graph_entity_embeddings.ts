/**
 * Semantic search over the knowledge graph (`GRAPH_EMBEDDING_MODEL`, since renamed `EMBEDDING_MODEL`).
 *
 * - `graph_entity_embeddings`: an entity's vector, one per entity, made by `model_id` from the text
 *   whose SHA-256 is `text_hash` (the entity's type, name and description: a changed text is embedded
 *   again). The vector is `dimensions` float32 values, little-endian, of length 1, as bytes (BLOB,
 *   bytea). It goes with its entity, and with its model.
 * - `usage_records.source` may also be `graph`: the tokens the server spends embedding a user's
 *   entities and their semantic searches. SQLite cannot change a CHECK constraint in place, so there
 *   the table is rebuilt (nothing references it); PostgreSQL replaces the constraint.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly bytes: string
  readonly timestamp: string
}

const embeddings = (t: Types) => [
  `CREATE TABLE graph_entity_embeddings (
    entity_id ${t.id} PRIMARY KEY REFERENCES graph_entities (id) ON DELETE CASCADE,
    model_id ${t.id} NOT NULL REFERENCES llm_models (id) ON DELETE CASCADE,
    dimensions integer NOT NULL CHECK (dimensions > 0),
    vector ${t.bytes} NOT NULL CHECK (length(vector) = 4 * dimensions),
    text_hash text NOT NULL CHECK (length(text_hash) = 64),
    created_at ${t.timestamp} NOT NULL
  )`,
  // Deleting a model removes its vectors: without this index that is a scan of the table.
  `CREATE INDEX graph_entity_embeddings_model_idx ON graph_entity_embeddings (model_id)`
]

const sources = "source IN ('gateway', 'chat', 'graph')"

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
  const statements = sql.onDialectOrElse({
    pg: () => [...embeddings({ id: "uuid", bytes: "bytea", timestamp: "timestamptz" }), ...pgUsage],
    orElse: () => [...embeddings({ id: "text", bytes: "blob", timestamp: "text" }), ...sqliteUsage]
  })
  for (const statement of statements) {
    yield* sql.unsafe(statement)
  }
})

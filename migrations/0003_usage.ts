/**
 * Token usage, one row per answer a provider reported counts for: who asked
 * (the user, and the API key when one was used), which model, through which
 * door (`gateway`: the OpenAI-compatible API; `chat`: the conversations), and
 * the counts. Per-key and per-user totals are sums over an index range.
 *
 * A deleted API key or model leaves its rows (the user's usage stays true);
 * `model_name` keeps what the model was called, as messages do. Erasing the
 * user erases the rows.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

const statements = (t: { readonly id: string; readonly timestamp: string; readonly now: string }) => [
  `CREATE TABLE usage_records (
    id ${t.id} PRIMARY KEY,
    user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    api_key_id ${t.id} REFERENCES api_keys (id) ON DELETE SET NULL,
    model_id ${t.id} REFERENCES llm_models (id) ON DELETE SET NULL,
    model_name text,
    source text NOT NULL CHECK (source IN ('gateway', 'chat')),
    prompt_tokens integer NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL CHECK (completion_tokens >= 0),
    created_at ${t.timestamp} NOT NULL DEFAULT ${t.now}
  )`,
  `CREATE INDEX usage_records_user_idx ON usage_records (user_id, created_at)`,
  `CREATE INDEX usage_records_api_key_idx ON usage_records (api_key_id, created_at) WHERE api_key_id IS NOT NULL`,
  // Deleting a model sets its rows' model_id to NULL: without this index that is a scan of the table.
  `CREATE INDEX usage_records_model_idx ON usage_records (model_id) WHERE model_id IS NOT NULL`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const types = sql.onDialectOrElse({
    pg: () => ({ id: "uuid", timestamp: "timestamptz", now: "now()" }),
    orElse: () => ({ id: "text", timestamp: "text", now: "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))" })
  })
  for (const statement of statements(types)) {
    yield* sql.unsafe(statement)
  }
})

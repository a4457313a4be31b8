/**
 * An API key may be limited to some models (`models`, a JSON array of model ids; JSON `null`:
 * every model its owner may use, as existing keys are).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const json = sql.onDialectOrElse({ pg: () => "jsonb", orElse: () => "text" })
  yield* sql.unsafe(`ALTER TABLE api_keys ADD COLUMN models ${json} NOT NULL DEFAULT 'null'`)
})

/**
 * A role may be limited to some models (`models`, a JSON array of model ids; JSON `null`: every
 * model, as the existing roles are). Its holders see and use only those; an API key of theirs is
 * limited further by its own list.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const json = sql.onDialectOrElse({ pg: () => "jsonb", orElse: () => "text" })
  yield* sql.unsafe(`ALTER TABLE roles ADD COLUMN models ${json} NOT NULL DEFAULT 'null'`)
})

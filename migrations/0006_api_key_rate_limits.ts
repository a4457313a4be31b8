/**
 * An API key may carry its own limit on the answers it asks models for
 * (`rate_limit_per_minute`, null: none beyond its owner's). Existing keys have none.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.unsafe(
    `ALTER TABLE api_keys ADD COLUMN rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute > 0)`
  )
})

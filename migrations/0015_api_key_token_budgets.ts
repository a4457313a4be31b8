/**
 * An API key may carry a token budget of its own (`token_budget`, tokens per `TOKEN_BUDGET_PERIOD`
 * spent through that key; NULL: none beyond its owner's, as for the existing keys).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.unsafe(`ALTER TABLE api_keys ADD COLUMN token_budget INTEGER CHECK (token_budget > 0)`)
})

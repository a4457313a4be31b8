/**
 * A role may carry its own token budget (`token_budget`, tokens per `TOKEN_BUDGET_PERIOD`; NULL:
 * the server's `TOKEN_BUDGET_PER_USER`, as for the existing roles).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.unsafe(`ALTER TABLE roles ADD COLUMN token_budget INTEGER CHECK (token_budget > 0)`)
})

/**
 * The `ratelimit:exempt` permission: a user holding it (through their role, and their API key's
 * scopes) is not held to the general per-user and per-address request limits. The built-in
 * `admin` role gets it, so that an administrator is never locked out while setting things right;
 * other users get it through a role an administrator gives them.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

const permission = "ratelimit:exempt"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const rows = yield* sql<{ readonly id: string; readonly permissions: unknown }>`
    SELECT id, permissions FROM roles WHERE name = 'admin'`
  for (const row of rows) {
    // A JSON array: parsed by PostgreSQL's driver (jsonb), text in SQLite.
    const permissions: Array<string> = typeof row.permissions === "string"
      ? JSON.parse(row.permissions)
      : row.permissions as Array<string>
    if (permissions.includes(permission)) continue
    yield* sql`UPDATE roles SET permissions = ${JSON.stringify([...permissions, permission])} WHERE id = ${row.id}`
  }
})

/**
 * The queue of background jobs in the embedded mode (`SqlPersistedQueue`'s table, as it would
 * create it). Created here, under the migrations' lock, so instances starting together do not race
 * to create it; the store's own `CREATE … IF NOT EXISTS` then finds it.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.onDialectOrElse({
    pg: () =>
      sql.unsafe(`CREATE TABLE IF NOT EXISTS job_queue (
        sequence SERIAL PRIMARY KEY,
        id VARCHAR(36) NOT NULL,
        queue_name VARCHAR(100) NOT NULL,
        element TEXT NOT NULL,
        completed BOOLEAN NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_failure TEXT NULL,
        acquired_at TIMESTAMP NULL,
        acquired_by UUID NULL,
        created_at TIMESTAMP NOT NULL,
        updated_at TIMESTAMP NOT NULL
      )`),
    orElse: () =>
      sql.unsafe(`CREATE TABLE IF NOT EXISTS job_queue (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        queue_name TEXT NOT NULL,
        element TEXT NOT NULL,
        completed BOOLEAN NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_failure TEXT NULL,
        acquired_at DATETIME NULL,
        acquired_by TEXT NULL,
        created_at DATETIME NOT NULL,
        updated_at DATETIME NOT NULL
      )`)
  })
  yield* sql.unsafe(`CREATE UNIQUE INDEX IF NOT EXISTS idx_job_queue_id ON job_queue (id)`)
  yield* sql.unsafe(
    `CREATE INDEX IF NOT EXISTS idx_job_queue_take ON job_queue (queue_name, completed, attempts, acquired_at)`
  )
  yield* sql.unsafe(`CREATE INDEX IF NOT EXISTS idx_job_queue_update ON job_queue (sequence, acquired_by)`)
})

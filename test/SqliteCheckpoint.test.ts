import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { freshDirectory, sqliteClientFor } from "./fixtures/Database.js"

// SQLite only: the write-ahead log and its checkpoints are SQLite's (PostgreSQL has its own).
describe("the SQLite write-ahead log", () => {
  it.scopedLive("is copied into the database by the checkpointer, not by the commits", () =>
    Effect.gen(function*() {
      const directory = yield* freshDirectory
      const filename = Path.join(directory, "webplus.db")
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const [setting] = yield* sql<{ readonly walAutocheckpoint: number }>`PRAGMA wal_autocheckpoint`
        // The serving connection only checkpoints as a last resort, far later than SQLite's 1,000 pages.
        expect(setting?.walAutocheckpoint).toBe(10_000)

        yield* sql`CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)`
        const before = Fs.statSync(filename).size
        // About 100 pages: a commit would not checkpoint them (1,000 pages by default, 10,000 here).
        for (let i = 0; i < 100; i++) yield* sql`INSERT INTO notes (body) VALUES (${"x".repeat(4_000)})`
        // The pages reach the database file, from the worker, within a round or two.
        yield* Effect.sync(() => Fs.statSync(filename).size).pipe(
          Effect.repeat({ until: (size) => size >= before + 100 * 4_000, schedule: Schedule.spaced("100 millis") }),
          Effect.timeout("5 seconds")
        )
        expect(Fs.statSync(filename).size).toBeGreaterThanOrEqual(before + 100 * 4_000)
        const rows = yield* sql<{ readonly count: number }>`SELECT count(*) AS count FROM notes`
        expect(rows[0]?.count).toBe(100)
      }).pipe(Effect.provide(sqliteClientFor(directory)))
    }), 20_000)
})

/**
 * `npm run cli -- backup <directory>`, run as an operator runs it (a child process) beside a running
 * server: on the embedded database, a consistent copy (a database of its own, whole, with what was
 * written before) with the secrets and the files' contents (encrypted: restored with the backup's
 * secrets, they open); with PostgreSQL, a refusal that says what to use instead.
 */
import { SqlClient } from "@effect/sql"
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { signUp } from "./fixtures/Auth.js"
import { uploadOne } from "./fixtures/Content.js"
import { dialects, sqliteClientFor } from "./fixtures/Database.js"
import { runCli } from "./fixtures/Process.js"
import { startTestServer, TestServer, testServer } from "./fixtures/Server.js"

const backupInto = (directory: string) => runCli(["backup", directory])

const scratch = Effect.acquireRelease(
  Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "webplus-backup-test-"))),
  (directory) => Effect.sync(() => Fs.rmSync(directory, { recursive: true, force: true }))
)

for (const dialect of dialects) {
  layer(testServer({ dialect }), { excludeTestServices: true })(`backups on ${dialect}`, (it) => {
    it.scoped(
      dialect === "sqlite"
        ? "copies the database, the secrets and the files' contents while the server runs"
        : "are left to PostgreSQL's tools: the command says so and writes nothing",
      () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const file = yield* uploadOne(user.accessToken, "kept.txt", "kept in the backup")
          const into = yield* scratch
          const run = yield* backupInto(into)
          if (dialect === "pg") {
            expect(run.code).not.toBe(0)
            expect(run.stderr).toContain("pg_dump")
            expect(Fs.readdirSync(into)).toEqual([])
            return
          }
          expect(run.code, run.stderr).toBe(0)
          const [made] = Fs.readdirSync(into)
          expect(made).toMatch(/^webplus-backup-/)
          const target = Path.join(into, made!)
          expect(run.stdout).toContain(target)

          // The copy opens as a database of its own, whole and with what was written before it.
          const { emails, integrity, storageKey } = yield* Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            const integrity = yield* sql<{ integrity_check: string }>`PRAGMA integrity_check`
            const emails = yield* sql<{ email: string }>`SELECT email FROM users`
            const stored = yield* sql<{ storageKey: string }>`SELECT storage_key FROM files WHERE id = ${file.id}`
            return { emails, integrity, storageKey: stored[0]!.storageKey }
          }).pipe(Effect.provide(sqliteClientFor(target)), Effect.orDie)
          expect(integrity.map((row) => Object.values(row)[0])).toEqual(["ok"])
          expect(emails.map((row) => row.email)).toContain(user.email)
          const { dataDir } = yield* TestServer
          const at = Path.join(storageKey.slice(0, 2), storageKey)
          const original = Fs.readFileSync(Path.join(dataDir, "files", at))
          // Encrypted at rest: only the secrets open it.
          expect(original.includes(Buffer.from("kept in the backup"))).toBe(false)
          expect(Fs.readFileSync(Path.join(target, "files", at)).equals(original)).toBe(true)
          expect(run.stdout).toContain("the same ENCRYPTION_KEYS")
          const secrets = Fs.statSync(Path.join(target, "secrets.json"))
          expect(secrets.mode & 0o777).toBe(0o600)
          expect(Fs.readFileSync(Path.join(target, "secrets.json"), "utf8")).toBe(
            Fs.readFileSync(Path.join((yield* TestServer).dataDir, "secrets.json"), "utf8")
          )

          // Restored as the command says (the backup as DATA_DIR), the file opens with the backup's secrets.
          const restored = yield* startTestServer(testServer({ env: { DATA_DIR: target } }))
          const { baseUrl } = restored
          const downloaded = yield* Effect.promise(async () => {
            const response = await fetch(`${baseUrl}/api/v1/files/${file.id}/content`, {
              headers: { authorization: `Bearer ${user.accessToken}` }
            })
            return { status: response.status, text: await response.text() }
          })
          expect(downloaded).toEqual({ status: 200, text: "kept in the backup" })
        }),
      { timeout: 90_000 }
    )
  })
}

/**
 * A database that cannot be reached: PostgreSQL behind a relay the test cuts,
 * and an SQLite file another connection holds locked. Requests that need the
 * database answer `503 ServiceUnavailable` with `Retry-After` (the gateway in
 * OpenAI's format, RPC as a typed `ServiceUnavailable` failure), each logged as one
 * warning rather than an unexpected failure; the process stays up, and once
 * the database is back the same server answers again, with the data as it was.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Stream } from "effect"
import { createRequire } from "node:module"
import * as Path from "node:path"
import OpenAI from "openai"
import { ServiceUnavailable } from "../src/Domain/Errors.js"
import { call, createKey, type Reply, signUp } from "./fixtures/Auth.js"
import { adminUrl, freshPgDatabase } from "./fixtures/Database.js"
import { capturedLogs } from "./fixtures/Logs.js"
import { tcpRelay } from "./fixtures/Outage.js"
import { as, overHttp } from "./fixtures/Rpc.js"
import { startTestServer, TestServer, testServer } from "./fixtures/Server.js"

/** The SQLite driver the server uses, for a connection of the test's own. */
const Sqlite = createRequire(import.meta.url)("better-sqlite3") as new(filename: string) => {
  exec(sql: string): void
  close(): void
}

const expectUnavailable = (reply: Reply) => {
  expect(reply.status, JSON.stringify(reply.body)).toBe(503)
  expect(reply.body).toEqual({
    _tag: "ServiceUnavailable",
    message: "The database cannot be reached; try again shortly"
  })
  expect(reply.headers["retry-after"]).toBe("5")
}

describe("a database that cannot be reached", () => {
  it.scopedLive(
    "PostgreSQL gone: 503 with Retry-After on every interface, then served again once it is back",
    () =>
      Effect.gen(function*() {
        const database = yield* freshPgDatabase
        const admin = new URL(adminUrl)
        const relay = yield* tcpRelay({ host: admin.hostname, port: Number(admin.port || 5432) })
        const url = new URL(database.url)
        url.port = String(relay.port)
        const logs = capturedLogs()
        const server = yield* startTestServer(
          testServer({ env: { DATABASE_URL: url.toString(), DEVELOPMENT_MODEL: "true" } }).pipe(
            Layer.provide(logs.layer)
          )
        )
        yield* Effect.gen(function*() {
          yield* signUp() // the administrator
          const user = yield* signUp()
          const key = yield* createKey(user, ["models:read", "models:use"])
          const created = yield* call("POST", "/api/v1/conversations", {
            auth: user.accessToken,
            body: { title: "Kept" }
          })
          expect(created.status).toBe(201)
          const rpc = yield* overHttp(server.baseUrl)
          const openai = new OpenAI({ apiKey: key.secret, baseURL: `${server.baseUrl}/v1`, maxRetries: 0 })

          yield* relay.cut
          // Signed in or not, reading or writing: the same answer, and nothing about the driver or the SQL.
          expectUnavailable(yield* call("GET", "/api/v1/conversations", { auth: user.accessToken }))
          expectUnavailable(
            yield* call("POST", "/api/v1/conversations", { auth: user.accessToken, body: { title: "Lost?" } })
          )
          expectUnavailable(
            yield* call("POST", "/api/v1/auth/login", { body: { login: user.email, password: user.password } })
          )
          expectUnavailable(yield* call("POST", "/api/v1/chat", { auth: user.accessToken, body: { content: "hi" } }))
          const gateway = yield* Effect.flip(Effect.tryPromise({ try: () => openai.models.list(), catch: (e) => e }))
          expect(gateway).toBeInstanceOf(OpenAI.InternalServerError)
          const refused = gateway as InstanceType<typeof OpenAI.InternalServerError>
          expect(refused.status).toBe(503)
          expect(refused.error).toMatchObject({ type: "api_error", code: "service_unavailable" })
          expect(refused.headers?.get("retry-after")).toBe("5")
          // Over RPC a typed failure, a call or a stream alike, that a client can match on its tag.
          const overRpc = yield* Effect.flip(as(user)(rpc.listConversations({})))
          expect(overRpc).toBeInstanceOf(ServiceUnavailable)
          expect(overRpc.message).toMatch(/^The database cannot be reached; try again shortly \(request id /)
          const streamed = yield* Effect.flip(as(user)(Stream.runDrain(rpc.newChat({ content: "hi" }))))
          expect(streamed).toBeInstanceOf(ServiceUnavailable)
          // The process is alive; it is not ready.
          expect((yield* call("GET", "/health/live")).status).toBe(200)
          expect((yield* call("GET", "/health/ready")).status).toBe(503)

          const warnings = logs.lines.filter((line) => line.message === "Database unavailable")
          expect(warnings.length).toBeGreaterThanOrEqual(6)
          expect(warnings.every((line) => line.level === "WARN" && typeof line.annotations.error === "string")).toBe(
            true
          )
          // Not reported as a fault of the server's (only the request lines say 503).
          expect(logs.lines.filter((line) => line.message === "Unexpected failure")).toEqual([])

          yield* relay.restore
          const listed = yield* call("GET", "/api/v1/conversations", { auth: user.accessToken })
          expect(listed.status).toBe(200)
          // What was there is there; what was refused was not written.
          expect(listed.body.items.map((item: { title: string }) => item.title)).toEqual(["Kept"])
          expect((yield* call("GET", "/health/ready")).status).toBe(200)
        }).pipe(Effect.provideService(TestServer, server))
      }),
    60_000
  )

  it.scopedLive(
    "SQLite locked by another connection past SQLITE_BUSY_TIMEOUT: 503 once it is over, then served again",
    () =>
      Effect.gen(function*() {
        const server = yield* startTestServer(testServer({ env: { SQLITE_BUSY_TIMEOUT: "300 millis" } }))
        yield* Effect.gen(function*() {
          const user = yield* signUp()
          // Another connection to the file (as another process would) takes the write lock and holds it.
          const holder = new Sqlite(Path.join(server.dataDir, "webplus.db"))
          holder.exec("BEGIN EXCLUSIVE")
          const [waited, refused] = yield* call("POST", "/api/v1/conversations", {
            auth: user.accessToken,
            body: { title: "Waits" }
          }).pipe(
            Effect.timed,
            Effect.ensuring(Effect.sync(() => {
              holder.exec("ROLLBACK")
              holder.close()
            }))
          )
          expectUnavailable(refused)
          // It waited for the lock as long as it was told to, not the 5 s SQLite tools often use.
          expect(Duration.toMillis(waited)).toBeGreaterThanOrEqual(280)
          expect(Duration.toMillis(waited)).toBeLessThan(2_000)
          const created = yield* call("POST", "/api/v1/conversations", {
            auth: user.accessToken,
            body: { title: "Now" }
          })
          expect(created.status).toBe(201)
        }).pipe(Effect.provideService(TestServer, server))
      }),
    60_000
  )
})

import { HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { describe, expect, it, layer } from "@effect/vitest"
import { Validator } from "@seriousme/openapi-schema-validator"
import { Context, Duration, Effect, Exit, Fiber, Layer, Schedule, Scope } from "effect"
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Path from "node:path"
import Pg from "pg"
import { adminUrl, dialects, freshDirectory } from "./fixtures/Database.js"
import { collect, spawnEntry } from "./fixtures/Process.js"
import { TestServer, testServer } from "./fixtures/Server.js"
import { TestApiLive } from "./fixtures/TestApi.js"

const get = (path: string, headers: Record<string, string> = {}) =>
  Effect.flatMap(TestServer, ({ client }) => client.execute(HttpClientRequest.get(path, { headers })))

const postJson = (path: string, body: unknown) =>
  Effect.flatMap(
    TestServer,
    ({ client }) => client.execute(HttpClientRequest.post(path).pipe(HttpClientRequest.bodyUnsafeJson(body)))
  )

const postRaw = (path: string, body: string, contentType = "application/json") =>
  Effect.flatMap(
    TestServer,
    ({ client }) => client.execute(HttpClientRequest.post(path).pipe(HttpClientRequest.bodyText(body, contentType)))
  )

const json = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(response.json, (body) => ({ status: response.status, headers: response.headers, body: body as any }))

/** Sends a request with node:http, for what fetch will not do (lying Content-Length, a body that never ends). */
const rawRequest = (
  baseUrl: string,
  options: { method: string; path: string; headers?: Record<string, string | number>; chunks?: ReadonlyArray<string> }
) =>
  Effect.async<{ status: number; body: string }, Error>((resume) => {
    const request = Http.request(`${baseUrl}${options.path}`, { method: options.method, headers: options.headers })
    request.on("response", (response) => {
      let body = ""
      response.on("data", (chunk) => (body += String(chunk)))
      response.on("end", () => resume(Effect.succeed({ status: response.statusCode ?? 0, body })))
    })
    request.on("error", (error) => resume(Effect.fail(error)))
    // Keep the request open (no end()) when chunks are given: the server must answer before the body ends.
    for (const chunk of options.chunks ?? []) request.write(chunk)
    if (!options.chunks) request.end()
    return Effect.sync(() => request.destroy())
  })

for (const dialect of dialects) {
  describe(`health on ${dialect}`, () => {
    layer(testServer({ dialect }), { excludeTestServices: true })((it) => {
      it.effect("/health/live answers 200 while the process is up", () =>
        Effect.gen(function*() {
          const { body, status } = yield* Effect.flatMap(get("/health/live"), json)
          expect(status).toBe(200)
          expect(body).toMatchObject({ status: "live" })
        }))

      it.effect("/health/ready answers 200 when the database answers and is migrated", () =>
        Effect.gen(function*() {
          const { body, status } = yield* Effect.flatMap(get("/health/ready"), json)
          expect(status).toBe(200)
          expect(body).toMatchObject({
            status: "ready",
            checks: { database: { status: "ok" }, migrations: { status: "ok" } }
          })
        }))
    })

    it.live("/health/ready answers 503 naming the migrations check when the schema is not applied", () =>
      Effect.gen(function*() {
        const { body, status } = yield* Effect.flatMap(get("/health/ready"), json)
        expect(status).toBe(503)
        expect(body).toMatchObject({
          _tag: "NotReady",
          message: "Not ready: migrations failing",
          checks: { database: { status: "ok" }, migrations: { status: "failing" } }
        })
        expect(body.checks.migrations.message).toMatch(/this build needs/)
      }).pipe(Effect.provide(testServer({ dialect, env: { MIGRATE_ON_START: "false" } }))))
  })
}

describe("readiness when the database goes away", () => {
  it.live("answers 503 naming the database check, and 200 again never lies", () =>
    Effect.gen(function*() {
      const { databaseUrl } = yield* TestServer
      expect((yield* get("/health/ready")).status).toBe(200)
      const name = new URL(databaseUrl!).pathname.slice(1)
      yield* Effect.promise(async () => {
        const admin = new Pg.Client({ connectionString: adminUrl })
        await admin.connect()
        await admin.query(`DROP DATABASE ${name} WITH (FORCE)`)
        await admin.end()
      })
      const { body, status } = yield* Effect.flatMap(get("/health/ready"), json)
      expect(status).toBe(503)
      expect(body).toMatchObject({
        _tag: "NotReady",
        checks: { database: { status: "failing" }, migrations: { status: "failing" } }
      })
      expect(body.message).toBe("Not ready: database, migrations failing")
      // Liveness is about the process, not its dependencies.
      expect((yield* get("/health/live")).status).toBe(200)
    }).pipe(Effect.provide(testServer({ dialect: "pg" }))))
})

describe("HTTP behaviour every endpoint shares", () => {
  layer(testServer({ env: { MAX_BODY_SIZE: "1kb" } }, TestApiLive), { excludeTestServices: true })((it) => {
    it.effect("unknown routes answer 404 with a JSON error body", () =>
      Effect.gen(function*() {
        const { body, headers, status } = yield* Effect.flatMap(get("/api/v1/nothing-here"), json)
        expect(status).toBe(404)
        expect(headers["content-type"]).toMatch(/^application\/json/)
        expect(body).toEqual({ _tag: "NotFound", message: "No route for GET /api/v1/nothing-here" })
      }))

    it.effect("a request id is generated, or honoured when the client sends one", () =>
      Effect.gen(function*() {
        const generated = yield* get("/health/live")
        expect(generated.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/)
        const honoured = yield* get("/health/live", { "x-request-id": "trace-abc.123" })
        expect(honoured.headers["x-request-id"]).toBe("trace-abc.123")
        // A header that could smuggle content into logs is replaced, not echoed.
        const replaced = yield* get("/health/live", { "x-request-id": "bad id with spaces" })
        expect(replaced.headers["x-request-id"]).toMatch(/^[0-9a-f-]{36}$/)
        const onError = yield* get("/nope", { "x-request-id": "err-1" })
        expect(onError.headers["x-request-id"]).toBe("err-1")
      }))

    it.effect("responses carry security headers for a JSON API", () =>
      Effect.gen(function*() {
        for (const path of ["/health/live", "/nope"]) {
          const response = yield* get(path)
          expect(response.headers).toMatchObject({
            "x-content-type-options": "nosniff",
            "x-frame-options": "DENY",
            "referrer-policy": "no-referrer",
            "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
            "cache-control": "no-store"
          })
        }
      }))

    it.effect("schema violations answer 422 listing every failing field", () =>
      Effect.gen(function*() {
        const { body, status } = yield* Effect.flatMap(postJson("/test/echo", { name: "", count: 99, tags: [1] }), json)
        expect(status).toBe(422)
        expect(body._tag).toBe("ValidationError")
        expect(typeof body.message).toBe("string")
        const paths = (body.issues as Array<{ path: Array<string | number> }>).map((issue) => issue.path.join("."))
        expect(paths).toEqual(expect.arrayContaining(["name", "count", "tags.0"]))
        const missing = yield* Effect.flatMap(postJson("/test/echo", {}), json)
        expect(missing.status).toBe(422)
        expect(missing.body.issues.map((issue: { path: Array<string> }) => issue.path.join("."))).toEqual(
          expect.arrayContaining(["name", "count"])
        )
      }))

    it.effect("query parameters are validated the same way", () =>
      Effect.gen(function*() {
        const { body, status } = yield* Effect.flatMap(get("/test/slow?ms=soon"), json)
        expect(status).toBe(422)
        expect(body).toMatchObject({ _tag: "ValidationError", issues: [{ path: ["ms"] }] })
      }))

    it.effect("malformed JSON answers 422", () =>
      Effect.gen(function*() {
        const { body, status } = yield* Effect.flatMap(postRaw("/test/echo", "{\"name\": \"a\", "), json)
        expect(status).toBe(422)
        expect(body).toEqual({
          _tag: "ValidationError",
          message: "The request body is not valid JSON",
          issues: [{ path: ["body"], message: "Malformed JSON" }]
        })
      }))

    it.effect("valid requests pass through untouched", () =>
      Effect.gen(function*() {
        const { body, status } = yield* Effect.flatMap(postJson("/test/echo", { name: "a", count: 2 }), json)
        expect(status).toBe(200)
        expect(body).toEqual({ name: "a", count: 2 })
      }))

    it.effect("a body declared larger than the limit is refused with 413 before it is read", () =>
      Effect.gen(function*() {
        const { baseUrl } = yield* TestServer
        // The declared length is never sent: the server must answer without waiting for it.
        const response = yield* rawRequest(baseUrl, {
          method: "POST",
          path: "/test/echo",
          headers: { "content-type": "application/json", "content-length": 10 * 1024 * 1024 },
          chunks: ["{\"name\":"]
        }).pipe(Effect.timeout("5 seconds"))
        expect(response.status).toBe(413)
        expect(JSON.parse(response.body)).toEqual({
          _tag: "PayloadTooLarge",
          message: "Request body exceeds the limit of 1024 bytes",
          limitBytes: 1024
        })
      }))

    it.effect("a streamed body is refused with 413 as soon as it crosses the limit", () =>
      Effect.gen(function*() {
        const { baseUrl } = yield* TestServer
        // Chunked, no Content-Length, and never ended: only reading can find it too large.
        const response = yield* rawRequest(baseUrl, {
          method: "POST",
          path: "/test/echo",
          headers: { "content-type": "application/json", "transfer-encoding": "chunked" },
          chunks: [`{"name":"${"a".repeat(2048)}`]
        }).pipe(Effect.timeout("5 seconds"))
        expect(response.status).toBe(413)
        expect(JSON.parse(response.body)._tag).toBe("PayloadTooLarge")
        // The server is unharmed.
        expect((yield* get("/health/live")).status).toBe(200)
      }))

    it.effect("a defect answers 500 with the request id and nothing internal", () =>
      Effect.gen(function*() {
        const response = yield* get("/test/defect", { "x-request-id": "defect-req-1" })
        const text = yield* response.text
        expect(response.status).toBe(500)
        expect(JSON.parse(text)).toEqual({
          _tag: "InternalError",
          message: "Internal server error",
          requestId: "defect-req-1"
        })
        expect(text).not.toMatch(/hunter2|secret|at .*\.ts/)
      }))

    it.effect("/openapi.json is a valid OpenAPI 3.1 document that documents 422, not the platform's 400", () =>
      Effect.gen(function*() {
        const { body, status } = yield* Effect.flatMap(get("/openapi.json"), json)
        expect(status).toBe(200)
        expect(body.openapi).toMatch(/^3\.1\./)
        const result = yield* Effect.promise(() => new Validator().validate(body))
        expect(result.errors ?? []).toEqual([])
        expect(result.valid).toBe(true)
        const text = JSON.stringify(body)
        expect(text).not.toContain("HttpApiDecodeError")
        const echo = body.paths["/test/echo"].post.responses
        expect(Object.keys(echo)).toEqual(expect.arrayContaining(["200", "404", "413", "422", "500"]))
        expect(echo["400"]).toBeUndefined()
        expect(Object.keys(body.paths["/health/ready"].get.responses)).toContain("503")
      }))

    it.effect("/docs serves the interactive reference", () =>
      Effect.gen(function*() {
        const response = yield* get("/docs")
        expect(response.status).toBe(200)
        expect(response.headers["content-type"]).toMatch(/^text\/html/)
        const html = yield* response.text
        expect(html).toContain("Web+ API")
      }))
  })
})

describe("Strict-Transport-Security", () => {
  layer(testServer({ env: { HSTS_MAX_AGE: "365 days" } }), { excludeTestServices: true })((it) => {
    it.effect("is sent on every response with HSTS_MAX_AGE", () =>
      Effect.gen(function*() {
        for (const path of ["/health/live", "/nope", "/docs"]) {
          expect((yield* get(path)).headers["strict-transport-security"]).toBe("max-age=31536000")
        }
      }))
  })

  layer(testServer(), { excludeTestServices: true })((it) => {
    it.effect("is not sent without it (a server reached over plain HTTP must not ask for it)", () =>
      Effect.gen(function*() {
        expect((yield* get("/health/live")).headers["strict-transport-security"]).toBeUndefined()
      }))
  })
})

describe("CORS", () => {
  layer(testServer({ env: { CORS_ORIGINS: "https://app.example" } }), { excludeTestServices: true })((it) => {
    it.effect("allows the configured origins only", () =>
      Effect.gen(function*() {
        const { client } = yield* TestServer
        const preflight = (origin: string) =>
          client.execute(
            HttpClientRequest.make("OPTIONS")("/health/ready", {
              headers: { origin, "access-control-request-method": "GET" }
            })
          )
        const allowed = yield* preflight("https://app.example")
        expect(allowed.headers["access-control-allow-origin"]).toBe("https://app.example")
        const refused = yield* preflight("https://evil.example")
        expect(refused.headers["access-control-allow-origin"]).not.toBe("https://evil.example")
        const simple = yield* get("/health/live", { origin: "https://app.example" })
        expect(simple.headers["access-control-allow-origin"]).toBe("https://app.example")
        expect(simple.headers["access-control-expose-headers"]).toContain("x-request-id")
      }))
  })

  layer(testServer(), { excludeTestServices: true })((it) => {
    it.effect("is off when no origin is configured", () =>
      Effect.gen(function*() {
        const response = yield* get("/health/live", { origin: "https://app.example" })
        expect(response.headers["access-control-allow-origin"]).toBeUndefined()
      }))
  })
})

/** Starts a server in its own scope, so the test decides when it shuts down. */
const startServer = <E>(layer: Layer.Layer<TestServer, E>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(layer, scope)
    return { server: Context.get(context, TestServer), shutdown: Scope.close(scope, Exit.void) }
  })

const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.timed(effect), ([duration, value]) => ({ ms: Duration.toMillis(duration), value }))

describe("graceful shutdown", () => {
  it.live("lets an in-flight request finish, then stops accepting", () =>
    Effect.gen(function*() {
      const { server, shutdown } = yield* startServer(
        testServer({ env: { SHUTDOWN_TIMEOUT: "10 seconds" } }, TestApiLive)
      )
      const inFlight = yield* server.client.execute(HttpClientRequest.get("/test/slow?ms=800")).pipe(
        Effect.flatMap(json),
        Effect.fork
      )
      yield* Effect.sleep("200 millis")
      const closing = yield* timed(shutdown)
      // Shutdown waited for the answer instead of cutting it.
      expect(closing.ms).toBeGreaterThanOrEqual(400)
      const answered = yield* Fiber.join(inFlight)
      expect(answered).toMatchObject({ status: 200, body: { sleptMs: 800 } })
      const after = yield* Effect.either(Effect.tryPromise(() => fetch(`${server.baseUrl}/health/live`)))
      expect(after._tag).toBe("Left")
    }))

  it.live("cuts requests still running after SHUTDOWN_TIMEOUT", () =>
    Effect.gen(function*() {
      const { server, shutdown } = yield* startServer(
        testServer({ env: { SHUTDOWN_TIMEOUT: "300 millis" } }, TestApiLive)
      )
      const inFlight = yield* server.client.execute(HttpClientRequest.get("/test/slow?ms=30000")).pipe(
        Effect.either,
        Effect.fork
      )
      yield* Effect.sleep("200 millis")
      const closing = yield* timed(shutdown)
      expect(closing.ms).toBeLessThan(5000)
      expect((yield* Fiber.join(inFlight))._tag).toBe("Left")
    }))

  it.scopedLive("SIGTERM drains, closes the database and exits 0, having logged each request as one JSON line", () =>
    Effect.gen(function*() {
      const dataDir = yield* freshDirectory
      const child = spawnEntry("server", { DATA_DIR: dataDir, PORT: "0", LOG_FORMAT: "json" })
      const { exited, output } = collect(child)
      const baseUrl = yield* Effect.suspend(() => {
        const url = /Listening on (http:\/\/[0-9.:]+)/.exec(output().stdout)?.[1]
        return url ? Effect.succeed(url) : Effect.fail("not listening yet")
      }).pipe(Effect.retry({ schedule: Schedule.spaced("50 millis") }), Effect.timeout("20 seconds"))
      const response = yield* Effect.promise(() =>
        fetch(`${baseUrl}/health/ready`, { headers: { "x-request-id": "sigterm-test-1" } })
      )
      expect(response.status).toBe(200)
      child.kill("SIGTERM")
      const finished = yield* exited.pipe(Effect.timeout("15 seconds"))
      expect(finished.code).toBe(0)
      const lines = finished.stdout.trim().split("\n").map((line) =>
        JSON.parse(line) as {
          message: string
          logLevel: string
          annotations: Record<string, unknown>
        }
      )
      const requestLine = lines.find((line) => line.message === "request")
      expect(requestLine?.annotations).toMatchObject({
        method: "GET",
        route: "/health/ready",
        status: 200,
        requestId: "sigterm-test-1"
      })
      expect(typeof requestLine?.annotations.durationMs).toBe("number")
      expect(lines.map((line) => line.message)).toContain("HTTP server stopped")
      // SQLite folds its write-ahead log back into the database file when the last connection closes.
      expect(Fs.existsSync(Path.join(dataDir, "webplus.db-wal"))).toBe(false)
      expect(finished.stderr).toBe("")
    }))
})

/**
 * The model registry through the real server, against loopback providers
 * that speak Ollama's, OpenAI's and Anthropic's real APIs, on both dialects:
 * providers and their credentials, sync, start and stop, downloads, presets,
 * and provider faults answered as typed errors, never as hangs.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { call, createKey, expectStatus, type Reply, signUp, type TestUser, uniqueName } from "./fixtures/Auth.js"
import { dialects, pgClientFor } from "./fixtures/Database.js"
import { openEvents, stalledEvents, upgradeAttempt, upgradeStatus } from "./fixtures/Events.js"
import { fakeProvider, unreachableUrl } from "./fixtures/Providers.js"
import { redisPrefix, redisUrl, withRedis } from "./fixtures/Redis.js"
import { startTwoInstances, TestServer, testServer } from "./fixtures/Server.js"

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
}

class TheCast extends Context.Tag("test/Models/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number], env: Record<string, string> = {}) =>
  Layer.effect(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const user = yield* signUp()
      return { admin, user }
    })
  ).pipe(
    Layer.provideMerge(
      testServer({
        dialect,
        env: {
          MODEL_STATUS_POLL_INTERVAL: "0 seconds",
          EVENTS_MAX_SOCKETS_PER_USER: "2",
          EVENTS_SOCKET_BUFFER_SIZE: "64kb",
          EVENTS_HEARTBEAT_INTERVAL: "200 millis",
          ...env
        }
      })
    )
  )

const expectError = (reply: Reply, status: number, tag: string) => {
  expect({ status: reply.status, _tag: reply.body?._tag }, JSON.stringify(reply.body)).toEqual({ status, _tag: tag })
}

/** Registers `fake` as a provider (with its key for OpenAI and Anthropic); the provider as the API shows it. */
const addProvider = (
  fake: { readonly url: string; readonly dialect?: string; readonly apiKey?: string },
  overrides: Record<string, unknown> = {}
) =>
  Effect.gen(function*() {
    const { admin } = yield* TheCast
    const kind = fake.dialect ?? "ollama"
    const body = {
      name: uniqueName(kind),
      kind,
      baseUrl: fake.url,
      ...(kind !== "ollama" && fake.apiKey ? { credential: fake.apiKey } : {}),
      connectTimeoutMs: 500,
      requestTimeoutMs: 1_000,
      ...overrides
    }
    return expectStatus(yield* call("POST", "/api/v1/providers", { auth: admin.accessToken, body }), 201)
  })

const asAdmin = (method: "GET" | "POST" | "PATCH" | "DELETE" | "PUT", path: string, body?: unknown) =>
  Effect.flatMap(TheCast, ({ admin }) => call(method, path, { auth: admin.accessToken, ...(body ? { body } : {}) }))

const asUser = (method: "GET" | "POST" | "PATCH" | "DELETE" | "PUT", path: string, body?: unknown) =>
  Effect.flatMap(TheCast, ({ user }) => call(method, path, { auth: user.accessToken, ...(body ? { body } : {}) }))

const sync = (providerId: string) => asAdmin("POST", `/api/v1/providers/${providerId}/sync`)

/** A synced Ollama provider on `fake`; its models. */
const syncedOllama = (fake: { readonly url: string }) =>
  Effect.gen(function*() {
    const provider = yield* addProvider(fake)
    const result = expectStatus(yield* sync(provider.id), 200)
    return { provider, models: result.models as Array<any> }
  })

/** Polls the model until `predicate` holds (a download runs in the background). */
const eventually = (id: string, predicate: (model: any) => boolean) =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 100; attempt++) {
      const model = expectStatus(yield* asAdmin("GET", `/api/v1/models/${id}`), 200)
      if (predicate(model)) return model
      yield* Effect.sleep("50 millis")
    }
    return expect.fail(`model ${id} never reached the expected state`)
  })

const modelNamed = (models: ReadonlyArray<any>, name: string) => {
  const model = models.find((item) => item.providerModel === name)
  expect(model, `${name} in ${JSON.stringify(models.map((item) => item.providerModel))}`).toBeDefined()
  return model
}

/** Every byte the database keeps for the server, where a plaintext credential must not be. */
const databaseBytes = Effect.gen(function*() {
  const { dataDir, databaseUrl } = yield* TestServer
  if (databaseUrl) {
    const rows = yield* Effect.provide(
      Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT * FROM providers`),
      pgClientFor(databaseUrl)
    ).pipe(Effect.orDie)
    return Buffer.from(JSON.stringify(rows))
  }
  const files = Fs.readdirSync(dataDir).filter((name) => name.startsWith("webplus.db"))
  expect(files).toContain("webplus.db")
  return Buffer.concat(files.map((name) => Fs.readFileSync(Path.join(dataDir, name))))
})

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`model registry on ${dialect}`, (it) => {
    describe("providers", () => {
      it.scoped("are created, read, listed, updated and deleted; credentials never leave the server", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("openai", [{ name: "gpt-loop" }])
          const created = yield* addProvider(fake)
          expect(created).toMatchObject({
            kind: "openai",
            baseUrl: fake.url,
            hasCredential: true,
            credentialLast4: fake.apiKey.slice(-4),
            enabled: true,
            source: "admin"
          })
          const read = expectStatus(yield* asAdmin("GET", `/api/v1/providers/${created.id}`), 200)
          const listed = expectStatus(yield* asAdmin("GET", "/api/v1/providers"), 200).items
          expect(listed.map((item: any) => item.id)).toContain(created.id)
          const renamed = expectStatus(
            yield* asAdmin("PATCH", `/api/v1/providers/${created.id}`, { name: uniqueName("renamed") }),
            200
          )
          expect(renamed.hasCredential).toBe(true)
          for (const body of [created, read, listed, renamed]) {
            expect(JSON.stringify(body)).not.toContain(fake.apiKey)
          }
          // The sealed credential still opens: the provider accepts the key the server sends.
          expectStatus(yield* sync(created.id), 200)
          const audit = expectStatus(
            yield* asAdmin("GET", `/api/v1/admin/audit-events?targetId=${created.id}`),
            200
          )
          expect(JSON.stringify(audit)).not.toContain(fake.apiKey)
          expect(audit.items.map((item: any) => item.action)).toEqual(
            expect.arrayContaining(["provider.created", "provider.updated", "provider.synced"])
          )

          const cleared = expectStatus(
            yield* asAdmin("PATCH", `/api/v1/providers/${created.id}`, { credential: null }),
            200
          )
          expect(cleared).toMatchObject({ hasCredential: false, credentialLast4: null })
          // Four characters of a short credential would give too much away.
          const short = expectStatus(
            yield* asAdmin("PATCH", `/api/v1/providers/${created.id}`, { credential: "short-key" }),
            200
          )
          expect(short).toMatchObject({ hasCredential: true, credentialLast4: null })
          expectStatus(yield* asAdmin("PATCH", `/api/v1/providers/${created.id}`, { credential: null }), 200)
          expectError(yield* sync(created.id), 502, "ProviderError")

          expectStatus(yield* asAdmin("DELETE", `/api/v1/providers/${created.id}`), 204)
          expectError(yield* asAdmin("GET", `/api/v1/providers/${created.id}`), 404, "NotFound")
        }))

      it.scoped("keep credentials unreadable in the database", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("anthropic", [{ name: "claude-loop" }])
          yield* addProvider(fake)
          const bytes = yield* databaseBytes
          expect(bytes.includes(Buffer.from(fake.apiKey))).toBe(false)
          expect(bytes.includes(Buffer.from(fake.apiKey.slice(0, 20)))).toBe(false)
        }))

      it.effect("refuse bad input with the failing fields, and duplicate names", () =>
        Effect.gen(function*() {
          const bad = yield* asAdmin("POST", "/api/v1/providers", {
            name: "",
            kind: "gemini",
            baseUrl: "ftp://example.com",
            connectTimeoutMs: -1
          })
          expectError(bad, 422, "ValidationError")
          const paths = bad.body.issues.map((issue: any) => issue.path.join("."))
          expect(paths).toEqual(expect.arrayContaining(["name", "kind", "baseUrl", "connectTimeoutMs"]))
          const credentialInUrl = yield* asAdmin("POST", "/api/v1/providers", {
            name: uniqueName("x"),
            kind: "openai",
            baseUrl: "https://user:secret@example.com"
          })
          expectError(credentialInUrl, 422, "ValidationError")
          expect(JSON.stringify(credentialInUrl.body)).not.toContain("secret@")
          const name = uniqueName("dup")
          expectStatus(yield* asAdmin("POST", "/api/v1/providers", { name, kind: "ollama", baseUrl: "http://a" }), 201)
          expectError(
            yield* asAdmin("POST", "/api/v1/providers", { name, kind: "ollama", baseUrl: "http://b" }),
            409,
            "Conflict"
          )
          const listed = expectStatus(yield* asAdmin("GET", "/api/v1/providers"), 200).items
          expect(listed.filter((item: any) => item.name === name)).toHaveLength(1)
        }))

      it.scoped("report health: reachability and latency", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("ollama", [])
          const up = yield* addProvider(fake)
          const healthy = expectStatus(yield* asAdmin("GET", `/api/v1/providers/${up.id}/health`), 200)
          expect(healthy).toMatchObject({ reachable: true, error: null })
          expect(healthy.latencyMs).toBeGreaterThanOrEqual(0)
          const down = yield* addProvider({ url: yield* unreachableUrl })
          const unhealthy = expectStatus(yield* asAdmin("GET", `/api/v1/providers/${down.id}/health`), 200)
          expect(unhealthy).toMatchObject({ reachable: false, latencyMs: null, error: { _tag: "ProviderUnreachable" } })
        }))

      it.effect("are for admins only", () =>
        Effect.gen(function*() {
          expectError(yield* asUser("GET", "/api/v1/providers"), 403, "Forbidden")
          expectError(
            yield* asUser("POST", "/api/v1/providers", { name: "mine", kind: "ollama", baseUrl: "http://x" }),
            403,
            "Forbidden"
          )
        }))
    })

    describe("sync", () => {
      it.scoped("Ollama: upserts the installed models with context window and capabilities, keeping operator edits", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("ollama", [
            { name: "llama3.2:1b", contextLength: 131072, capabilities: ["completion", "tools"] },
            { name: "llava:7b", contextLength: 4096, capabilities: ["completion", "vision"] }
          ])
          fake.running.add("llava:7b")
          const provider = yield* addProvider(fake)
          const first = expectStatus(yield* sync(provider.id), 200)
          expect(first).toMatchObject({ added: 2, updated: 0, unlisted: [] })
          const llama = modelNamed(first.models, "llama3.2:1b")
          expect(llama).toMatchObject({
            contextWindow: 131072,
            capabilities: ["completion", "tools"],
            isLocal: true,
            status: "available",
            enabled: true
          })
          expect(modelNamed(first.models, "llava:7b").status).toBe("running")

          const renamed = expectStatus(
            yield* asAdmin("PATCH", `/api/v1/models/${llama.id}`, {
              displayName: "Llama (small)",
              contextWindow: 8192
            }),
            200
          )
          expect(renamed).toMatchObject({ displayName: "Llama (small)", contextWindow: 8192 })
          fake.models.push({ name: "qwen2.5:0.5b", contextLength: 32768 })
          fake.models.splice(fake.models.findIndex((model) => model.name === "llava:7b"), 1)
          const second = expectStatus(yield* sync(provider.id), 200)
          expect(second).toMatchObject({ added: 1, updated: 1, unlisted: ["llava:7b"] })
          expect(modelNamed(second.models, "llama3.2:1b")).toMatchObject({
            id: llama.id,
            displayName: "Llama (small)",
            contextWindow: 8192
          })
          expect(second.models).toHaveLength(3)
        }))

      it.scoped("OpenAI: lists /v1/models with the bearer credential", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("openai", [{ name: "gpt-4o-mini", contextLength: 128000 }, { name: "o3" }])
          const provider = yield* addProvider(fake)
          const result = expectStatus(yield* sync(provider.id), 200)
          expect(result.models.map((model: any) => model.providerModel).sort()).toEqual(["gpt-4o-mini", "o3"])
          expect(modelNamed(result.models, "gpt-4o-mini")).toMatchObject({ contextWindow: 128000, isLocal: false })
          expect(fake.requests.at(-1)?.headers.authorization).toBe(`Bearer ${fake.apiKey}`)
        }))

      it.scoped("openai-compatible: a base URL with or without /v1", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("openai", [{ name: "local-model" }])
          const bare = yield* addProvider(fake, { kind: "openai-compatible", credential: fake.apiKey })
          const withV1 = yield* addProvider({ ...fake, url: `${fake.url}/v1` }, {
            kind: "openai-compatible",
            credential: fake.apiKey
          })
          for (const provider of [bare, withV1]) {
            expect(expectStatus(yield* sync(provider.id), 200).added).toBe(1)
          }
          expect(fake.requests.every((request) => request.path === "/v1/models")).toBe(true)
        }))

      it.scoped("Anthropic: follows pagination, with x-api-key and anthropic-version", () =>
        Effect.gen(function*() {
          const names = ["claude-a", "claude-b", "claude-c", "claude-d", "claude-e"]
          const fake = yield* fakeProvider(
            "anthropic",
            names.map((name) => ({ name, displayName: name.toUpperCase() }))
          )
          const provider = yield* addProvider(fake)
          const result = expectStatus(yield* sync(provider.id), 200)
          expect(result.models.map((model: any) => model.providerModel).sort()).toEqual(names)
          expect(modelNamed(result.models, "claude-c").displayName).toBe("CLAUDE-C")
          expect(fake.requests).toHaveLength(3)
          expect(fake.requests[1]?.path).toContain("after_id=claude-b")
          expect(fake.requests[0]?.headers["x-api-key"]).toBe(fake.apiKey)
        }))

      for (const kind of ["ollama", "openai", "anthropic"] as const) {
        it.scoped(`${kind}: malformed, failing and silent listings are typed errors, and health says so`, () =>
          Effect.gen(function*() {
            const fake = yield* fakeProvider(kind, [{ name: "m" }])
            const provider = yield* addProvider(fake)
            const listing = kind === "ollama" ? "/api/tags" : "/v1/models"
            const cases = [
              [{ kind: "malformed" }, 502, "ProviderError"],
              [{ kind: "status", status: 503 }, 502, "ProviderError"],
              [{ kind: "status", status: 429 }, 502, "ProviderError"],
              [{ kind: "hang" }, 504, "ProviderTimeout"]
            ] as const
            for (const [fault, status, tag] of cases) {
              fake.faults.set(listing, fault)
              expectError(yield* sync(provider.id), status, tag)
              const health = expectStatus(yield* asAdmin("GET", `/api/v1/providers/${provider.id}/health`), 200)
              expect(health).toMatchObject({ reachable: false, error: { _tag: tag } })
            }
            fake.faults.clear()
            expect(expectStatus(yield* sync(provider.id), 200).added).toBe(1)
          }))
      }

      it.scoped("provider faults are typed errors, never hangs", () =>
        Effect.gen(function*() {
          const down = yield* addProvider({ url: yield* unreachableUrl })
          expectError(yield* sync(down.id), 503, "ProviderUnreachable")

          const fake = yield* fakeProvider("ollama", [{ name: "m" }])
          const provider = yield* addProvider(fake)
          fake.faults.set("/api/tags", { kind: "hang" })
          const started = Date.now()
          const hung = yield* sync(provider.id)
          expectError(hung, 504, "ProviderTimeout")
          expect(Date.now() - started).toBeLessThan(3_000)
          fake.faults.set("/api/tags", { kind: "slow", ms: 1_500 })
          expectError(yield* sync(provider.id), 504, "ProviderTimeout")
          fake.faults.set("/api/tags", { kind: "malformed" })
          expectError(yield* sync(provider.id), 502, "ProviderError")
          fake.faults.set("/api/tags", { kind: "status", status: 500 })
          const failed = yield* sync(provider.id)
          expectError(failed, 502, "ProviderError")
          expect(failed.body.upstreamStatus).toBe(500)

          const openai = yield* fakeProvider("openai", [{ name: "x" }])
          const wrongKey = yield* addProvider(openai, { credential: "sk-wrong-key" })
          const rejected = yield* sync(wrongKey.id)
          expectError(rejected, 502, "ProviderError")
          expect(rejected.body).toMatchObject({ upstreamStatus: 401 })
          expect(JSON.stringify(rejected.body)).not.toContain("sk-wrong-key")

          // A redirect is not followed: the credential is never replayed to another host.
          const elsewhere = yield* fakeProvider("openai", [{ name: "x" }])
          const redirecting = yield* addProvider(openai)
          openai.faults.set("/v1/models", { kind: "redirect", location: `${elsewhere.url}/v1/models` })
          const redirected = yield* sync(redirecting.id)
          expectError(redirected, 502, "ProviderError")
          expect(redirected.body.upstreamStatus).toBe(302)
          expect(elsewhere.requests).toEqual([])
          // Nothing was written by the failed syncs.
          expect(expectStatus(yield* asAdmin("GET", `/api/v1/models?providerId=${provider.id}`), 200)).toEqual({
            items: [],
            nextCursor: null
          })
        }))
    })

    describe("models", () => {
      it.scoped("users see the enabled models of enabled providers, filtered by status and provider", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("ollama", [{ name: "a:1b" }, { name: "b:1b" }])
          fake.running.add("b:1b")
          const { models, provider } = yield* syncedOllama(fake)
          const a = modelNamed(models, "a:1b")
          const b = modelNamed(models, "b:1b")
          const mine = expectStatus(yield* asUser("GET", `/api/v1/models?providerId=${provider.id}`), 200).items
          expect(mine.map((model: any) => model.providerModel).sort()).toEqual(["a:1b", "b:1b"])
          const running = expectStatus(
            yield* asUser("GET", `/api/v1/models?providerId=${provider.id}&status=running`),
            200
          ).items
          expect(running.map((model: any) => model.id)).toEqual([b.id])
          expectError(yield* asUser("GET", "/api/v1/models?status=sleeping"), 422, "ValidationError")

          expectStatus(yield* asAdmin("PATCH", `/api/v1/models/${a.id}`, { enabled: false }), 200)
          const afterDisable = expectStatus(yield* asUser("GET", `/api/v1/models?providerId=${provider.id}`), 200).items
          expect(afterDisable.map((model: any) => model.id)).toEqual([b.id])
          expectError(yield* asUser("GET", `/api/v1/models/${a.id}`), 404, "NotFound")
          // Admins still see it.
          expect(expectStatus(yield* asAdmin("GET", `/api/v1/models/${a.id}`), 200).enabled).toBe(false)

          expectStatus(yield* asAdmin("PATCH", `/api/v1/providers/${provider.id}`, { enabled: false }), 200)
          expect(expectStatus(yield* asUser("GET", `/api/v1/models?providerId=${provider.id}`), 200).items).toEqual([])
        }))

      it.scoped("are added by hand, renamed and deleted; duplicates conflict", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("openai", [])
          const provider = yield* addProvider(fake)
          const body = {
            providerId: provider.id,
            providerModel: "my-finetune",
            displayName: "My fine-tune",
            contextWindow: 16384,
            capabilities: ["completion", "tools"]
          }
          const created = expectStatus(yield* asAdmin("POST", "/api/v1/models", body), 201)
          expect(created).toMatchObject({ ...body, status: "available", enabled: true, isLocal: false })
          expectError(yield* asAdmin("POST", "/api/v1/models", body), 409, "Conflict")
          expectError(
            yield* asAdmin("POST", "/api/v1/models", { ...body, providerId: "0192f0c1-7d3a-7b1e-9c4e-3f2a1b0c9d8e" }),
            404,
            "NotFound"
          )
          const renamed = expectStatus(
            yield* asAdmin("PATCH", `/api/v1/models/${created.id}`, { displayName: "Renamed" }),
            200
          )
          expect(renamed.displayName).toBe("Renamed")
          // The provider now lists it: the sync keeps the operator's name and context window.
          fake.models.push({ name: "my-finetune", contextLength: 4096 })
          const synced = expectStatus(yield* sync(provider.id), 200)
          expect(modelNamed(synced.models, "my-finetune")).toMatchObject({
            id: created.id,
            displayName: "Renamed",
            contextWindow: 16384
          })
          expectStatus(yield* asAdmin("DELETE", `/api/v1/models/${created.id}`), 204)
          expectError(yield* asAdmin("GET", `/api/v1/models/${created.id}`), 404, "NotFound")
          expectError(yield* asAdmin("PATCH", `/api/v1/models/${created.id}`, { enabled: true }), 404, "NotFound")
        }))
    })

    describe("start and stop", () => {
      it.scoped("Ollama: start loads the model, stop unloads it, and the status follows /api/ps", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("ollama", [{ name: "llama3.2:1b" }])
          const { models } = yield* syncedOllama(fake)
          const model = modelNamed(models, "llama3.2:1b")
          const started = expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/start`), 200)
          expect(started).toMatchObject({ status: "running", statusMessage: null })
          expect(fake.running.has("llama3.2:1b")).toBe(true)
          const load = fake.requests.find((request) => request.path === "/api/generate")
          expect(load?.body).toMatchObject({ model: "llama3.2:1b", keep_alive: -1 })

          const stopped = expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/stop`), 200)
          expect(stopped.status).toBe("stopped")
          expect(fake.running.has("llama3.2:1b")).toBe(false)
          expect(fake.requests.filter((request) => request.path === "/api/generate").at(-1)?.body).toMatchObject({
            model: "llama3.2:1b",
            keep_alive: 0
          })

          // Loaded behind the server's back: the next sync reports it running.
          fake.running.add("llama3.2:1b")
          expect(modelNamed(expectStatus(yield* sync(models[0].providerId), 200).models, "llama3.2:1b").status)
            .toBe("running")
        }))

      it.scoped("Ollama: a model Ollama does not have fails typed, and the model shows the error", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("ollama", [{ name: "gone:1b" }])
          const { models } = yield* syncedOllama(fake)
          fake.models.length = 0
          const failed = yield* asAdmin("POST", `/api/v1/models/${models[0].id}/start`)
          expectError(failed, 502, "ProviderError")
          expect(failed.body.upstreamStatus).toBe(404)
          const model = expectStatus(yield* asAdmin("GET", `/api/v1/models/${models[0].id}`), 200)
          expect(model.status).toBe("error")
          expect(model.statusMessage).toEqual(expect.any(String))
        }))

      it.scoped("an unreachable or silent provider fails typed and promptly", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("ollama", [{ name: "slow:1b" }])
          const { models } = yield* syncedOllama(fake)
          fake.faults.set("/api/generate", { kind: "hang" })
          const started = Date.now()
          expectError(yield* asAdmin("POST", `/api/v1/models/${models[0].id}/start`), 504, "ProviderTimeout")
          expect(Date.now() - started).toBeLessThan(3_000)
          expectStatus(
            yield* asAdmin("PATCH", `/api/v1/providers/${models[0].providerId}`, {
              baseUrl: yield* unreachableUrl
            }),
            200
          )
          expectError(yield* asAdmin("POST", `/api/v1/models/${models[0].id}/stop`), 503, "ProviderUnreachable")
        }))

      it.scoped("remote APIs: start and stop enable and disable the model", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider("anthropic", [{ name: "claude-x" }])
          const provider = yield* addProvider(fake)
          const [model] = expectStatus(yield* sync(provider.id), 200).models
          const stopped = expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/stop`), 200)
          expect(stopped).toMatchObject({ enabled: false, status: "stopped" })
          expectError(yield* asUser("GET", `/api/v1/models/${model.id}`), 404, "NotFound")
          const started = expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/start`), 200)
          expect(started).toMatchObject({ enabled: true, status: "available" })
          expectStatus(yield* asUser("GET", `/api/v1/models/${model.id}`), 200)
          expectError(yield* asUser("POST", `/api/v1/models/${model.id}/stop`), 403, "Forbidden")
        }))
    })

    describe("downloads", () => {
      it.scoped("pull answers at once, reports progress as events, and ends with the model available", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const fake = yield* fakeProvider("ollama", [])
          fake.pullable.set("tiny:0.5b", { name: "tiny:0.5b", contextLength: 2048, capabilities: ["completion"] })
          fake.pullStepMs = 50
          const provider = yield* addProvider(fake)
          const events = yield* openEvents(admin.accessToken)
          yield* events.next((message) => message.type === "snapshot")
          const pulled = expectStatus(
            yield* asAdmin("POST", `/api/v1/providers/${provider.id}/pull`, { name: "tiny:0.5b" }),
            202
          )
          expect(pulled).toMatchObject({ providerModel: "tiny:0.5b", status: "loading" })
          expectError(
            yield* asAdmin("POST", `/api/v1/providers/${provider.id}/pull`, { name: "tiny:0.5b" }),
            409,
            "Conflict"
          )
          const progress = yield* events.next((message) =>
            message.type === "model.pull" && message.modelId === pulled.id && message.completed === 100
          )
          expect(progress).toMatchObject({ total: 100, providerModel: "tiny:0.5b" })
          yield* events.next((message) =>
            message.type === "model.status" && message.modelId === pulled.id && message.status === "available"
          )
          const done = yield* eventually(pulled.id, (model) => model.status === "available")
          expect(done).toMatchObject({ contextWindow: 2048, statusMessage: null })

          const missing = expectStatus(
            yield* asAdmin("POST", `/api/v1/providers/${provider.id}/pull`, { name: "no-such-model" }),
            202
          )
          const failed = yield* eventually(missing.id, (model) => model.status === "error")
          expect(failed.statusMessage).toContain("Download failed")
          // Once the provider lists it (pulled some other way), a sync clears the failure.
          fake.models.push({ name: "no-such-model" })
          expect(modelNamed(expectStatus(yield* sync(provider.id), 200).models, "no-such-model")).toMatchObject({
            status: "available",
            statusMessage: null
          })

          const remote = yield* addProvider(yield* fakeProvider("openai", []))
          expectError(
            yield* asAdmin("POST", `/api/v1/providers/${remote.id}/pull`, { name: "x" }),
            409,
            "Conflict"
          )
          expectError(
            yield* asAdmin("POST", `/api/v1/providers/${provider.id}/pull`, { name: "bad name with spaces" }),
            422,
            "ValidationError"
          )
        }))
    })

    describe("presets", () => {
      it.scoped("are personal or global, validated against what the provider accepts", () =>
        Effect.gen(function*() {
          const { admin, user } = yield* TheCast
          const fake = yield* fakeProvider("anthropic", [{ name: "claude-p" }])
          const provider = yield* addProvider(fake)
          const [model] = expectStatus(yield* sync(provider.id), 200).models
          const personal = expectStatus(
            yield* asUser("POST", "/api/v1/model-configs", {
              name: uniqueName("mine"),
              modelId: model.id,
              systemPrompt: "Be brief.",
              temperature: 0.7,
              topP: 0.9,
              maxTokens: 1024,
              stop: ["END"],
              extraParams: { top_k: 40 }
            }),
            201
          )
          expect(personal).toMatchObject({
            scope: "personal",
            temperature: 0.7,
            stop: ["END"],
            extraParams: { top_k: 40 }
          })
          const tooHot = yield* asUser("POST", "/api/v1/model-configs", {
            name: uniqueName("hot"),
            modelId: model.id,
            temperature: 1.5
          })
          expectError(tooHot, 422, "ValidationError")
          expect(tooHot.body.issues.map((issue: any) => issue.path.join("."))).toEqual(["temperature"])
          const reserved = yield* asUser("POST", "/api/v1/model-configs", {
            name: uniqueName("r"),
            extraParams: { stream: false }
          })
          expectError(reserved, 422, "ValidationError")
          expectError(
            yield* asUser("POST", "/api/v1/model-configs", { name: uniqueName("t"), temperature: 3, topP: -1 }),
            422,
            "ValidationError"
          )
          expectError(
            yield* asUser("PATCH", `/api/v1/model-configs/${personal.id}`, { temperature: 1.2 }),
            422,
            "ValidationError"
          )
          expectError(
            yield* asUser("POST", "/api/v1/model-configs", { name: personal.name }),
            409,
            "Conflict"
          )

          expectError(
            yield* asUser("POST", "/api/v1/model-configs", { name: uniqueName("g"), scope: "global" }),
            403,
            "Forbidden"
          )
          const global = expectStatus(
            yield* asAdmin("POST", "/api/v1/model-configs", {
              name: uniqueName("house"),
              scope: "global",
              temperature: 0.2
            }),
            201
          )
          const seen = expectStatus(yield* call("GET", "/api/v1/model-configs", { auth: user.accessToken }), 200).items
          expect(seen.map((config: any) => config.id)).toEqual(expect.arrayContaining([personal.id, global.id]))
          const adminSees = expectStatus(yield* call("GET", "/api/v1/model-configs", { auth: admin.accessToken }), 200)
            .items
          expect(adminSees.map((config: any) => config.id)).not.toContain(personal.id)
          expectError(
            yield* asUser("PATCH", `/api/v1/model-configs/${global.id}`, { temperature: 0.3 }),
            403,
            "Forbidden"
          )
          expectError(yield* asUser("DELETE", `/api/v1/model-configs/${global.id}`), 403, "Forbidden")
          const edited = expectStatus(
            yield* asUser("PATCH", `/api/v1/model-configs/${personal.id}`, { systemPrompt: null, maxTokens: 10 }),
            200
          )
          expect(edited).toMatchObject({ systemPrompt: null, maxTokens: 10, temperature: 0.7 })
          expectStatus(yield* asUser("DELETE", `/api/v1/model-configs/${personal.id}`), 204)
          expectStatus(yield* asAdmin("DELETE", `/api/v1/model-configs/${global.id}`), 204)
        }))
    })

    describe("status events", () => {
      it.scoped("a WebSocket client gets the current state, then every status change", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const fake = yield* fakeProvider("ollama", [{ name: "evented:1b" }])
          fake.running.add("evented:1b")
          const { models } = yield* syncedOllama(fake)
          const model = modelNamed(models, "evented:1b")
          const events = yield* openEvents(user.accessToken, "protocol")
          const snapshot = yield* events.next((message) => message.type === "snapshot")
          expect(snapshot.models.find((entry: any) => entry.modelId === model.id)).toMatchObject({
            status: "running",
            providerModel: "evented:1b",
            usable: true
          })
          expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/stop`), 200)
          const stopped = yield* events.next((message) =>
            message.type === "model.status" && message.modelId === model.id
          )
          expect(stopped).toMatchObject({ status: "stopped" })
          expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/start`), 200)
          yield* events.next((message) =>
            message.type === "model.status" && message.modelId === model.id && message.status === "loading"
          )
          yield* events.next((message) =>
            message.type === "model.status" && message.modelId === model.id && message.status === "running"
          )
          // Disabled: the user hears it once, then nothing about it until it is theirs again.
          expectStatus(yield* asAdmin("PATCH", `/api/v1/models/${model.id}`, { enabled: false }), 200)
          expect(yield* events.next((message) => message.modelId === model.id)).toMatchObject({
            type: "model.status",
            usable: false
          })
          expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/stop`), 200)
          expectStatus(yield* asAdmin("PATCH", `/api/v1/models/${model.id}`, { enabled: true }), 200)
          expect(yield* events.next((message) => message.modelId === model.id)).toMatchObject({
            type: "model.status",
            status: "stopped",
            usable: true
          })
          expectStatus(yield* asAdmin("DELETE", `/api/v1/models/${model.id}`), 204)
          yield* events.next((message) => message.type === "model.removed" && message.modelId === model.id)
        }))

      it.scoped("a key limited to some models hears of those only, in the snapshot and after", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const fake = yield* fakeProvider("ollama", [{ name: "heard:1b" }, { name: "unheard:1b" }])
          fake.running.add("heard:1b")
          fake.running.add("unheard:1b")
          const { models } = yield* syncedOllama(fake)
          const [heard, unheard] = [modelNamed(models, "heard:1b"), modelNamed(models, "unheard:1b")]
          const key = yield* createKey(user, ["models:read"], { models: [heard.id] })
          const events = yield* openEvents(key.secret)
          const snapshot = yield* events.next((message) => message.type === "snapshot")
          const ids = snapshot.models.map((entry: any) => entry.modelId)
          expect(ids).toContain(heard.id)
          expect(ids).not.toContain(unheard.id)
          // The other model's change first: were it sent, it would arrive before the heard one's.
          expectStatus(yield* asAdmin("POST", `/api/v1/models/${unheard.id}/stop`), 200)
          expectStatus(yield* asAdmin("POST", `/api/v1/models/${heard.id}/stop`), 200)
          expect(yield* events.next((message) => message.type === "model.status")).toMatchObject({
            modelId: heard.id,
            status: "stopped"
          })
        }))

      it.scoped("a client that stops reading is dropped; the others get every event", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const fake = yield* fakeProvider("ollama", [])
          fake.pullable.set("flood:1b", { name: "flood:1b" })
          // A download reporting 40 000 distinct phases: several megabytes of events.
          fake.routes.set("POST /api/pull", (_request, response) => {
            response.writeHead(200, { "content-type": "application/x-ndjson" })
            const lines: Array<string> = []
            for (let part = 0; part < 40_000; part++) {
              lines.push(JSON.stringify({ status: `pulling part ${part}`, total: 40_000, completed: part }))
            }
            fake.models.push({ name: "flood:1b" })
            response.end(`${lines.join("\n")}\n${JSON.stringify({ status: "success" })}\n`)
          })
          const provider = yield* addProvider(fake)
          const stalled = yield* stalledEvents(admin.accessToken)
          const reader = yield* openEvents(admin.accessToken)
          yield* reader.next((message) => message.type === "snapshot")
          const pulled = expectStatus(
            yield* asAdmin("POST", `/api/v1/providers/${provider.id}/pull`, { name: "flood:1b" }),
            202
          )
          const last = yield* reader.next(
            (message) => message.type === "model.pull" && message.status === "pulling part 39999",
            "30 seconds"
          )
          expect(last.modelId).toBe(pulled.id)
          yield* reader.next(
            (message) =>
              message.type === "model.status" && message.modelId === pulled.id && message.status === "available",
            "30 seconds"
          )
          // The server cut it after a bounded amount of data, long before the end.
          const received = yield* stalled.drain
          expect(received.includes(Buffer.from("\"type\":\"snapshot\""))).toBe(true)
          expect(received.includes(Buffer.from("pulling part 39999"))).toBe(false)
        }), 60_000)

      it.scoped("a user disabled while connected is disconnected at the next heartbeat", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const someone = yield* signUp()
          const events = yield* openEvents(someone.accessToken)
          yield* events.next((message) => message.type === "snapshot")
          yield* events.next((message) => message.type === "ping")
          expect(yield* events.closed).toBe(false)
          expectStatus(
            yield* call("POST", `/api/v1/admin/users/${someone.id}/disable`, { auth: admin.accessToken }),
            200
          )
          let closed = false
          for (let attempt = 0; attempt < 50 && !closed; attempt++) {
            yield* Effect.sleep("50 millis")
            closed = yield* events.closed
          }
          expect(closed).toBe(true)
        }))

      it.scoped("refuses missing or bad credentials, and bounds the sockets per user", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          expect(yield* upgradeAttempt("/api/v1/events")).toMatchObject({ status: 401, body: { _tag: "Unauthorized" } })
          // Plain HTTP is told to upgrade.
          const plain = yield* call("GET", "/api/v1/events", { auth: user.accessToken })
          expect({ status: plain.status, _tag: plain.body?._tag }).toEqual({ status: 426, _tag: "UpgradeRequired" })
          expect(yield* upgradeStatus("/api/v1/events?access_token=nonsense")).toBe(401)
          expect(yield* upgradeStatus("/api/v1/events", { authorization: `Bearer ${user.accessToken}` })).toBe(101)
          // A key that may read neither models nor conversations has nothing to hear.
          const deaf = yield* createKey(user, ["chat", "models:use"])
          expect(yield* upgradeAttempt(`/api/v1/events?access_token=${deaf.secret}`)).toMatchObject({
            status: 403,
            body: { _tag: "Forbidden" }
          })
          const other = yield* signUp()
          yield* Effect.gen(function*() {
            const first = yield* openEvents(other.accessToken)
            const second = yield* openEvents(other.accessToken)
            yield* first.next((message) => message.type === "snapshot")
            yield* second.next((message) => message.type === "snapshot")
            expect(yield* upgradeAttempt(`/api/v1/events?access_token=${other.accessToken}`)).toMatchObject({
              status: 429,
              body: { _tag: "RateLimited", retryAfterSeconds: 5 }
            })
          }).pipe(Effect.scoped)
          // Closed sockets give their places back.
          let status = 0
          for (let attempt = 0; attempt < 50 && status !== 101; attempt++) {
            yield* Effect.sleep("20 millis")
            status = yield* upgradeStatus(`/api/v1/events?access_token=${other.accessToken}`)
          }
          expect(status).toBe(101)
          // Other users are not affected.
          expect(yield* upgradeStatus(`/api/v1/events?access_token=${user.accessToken}`)).toBe(101)
        }))
    })
  })
}

for (const dialect of dialects) {
  layer(withCast(dialect, { MODEL_STATUS_POLL_INTERVAL: "100 millis" }), { excludeTestServices: true })(
    `Ollama status read-back on ${dialect}`,
    (it) => {
      it.scoped("models loaded or unloaded behind the server's back follow /api/ps", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const fake = yield* fakeProvider("ollama", [{ name: "polled:1b" }])
          const { models } = yield* syncedOllama(fake)
          const model = modelNamed(models, "polled:1b")
          expect(model.status).toBe("available")
          const events = yield* openEvents(user.accessToken)
          yield* events.next((message) => message.type === "snapshot")
          fake.running.add("polled:1b")
          yield* events.next((message) =>
            message.type === "model.status" && message.modelId === model.id && message.status === "running"
          )
          yield* eventually(model.id, (current) => current.status === "running")
          fake.running.delete("polled:1b")
          yield* eventually(model.id, (current) => current.status === "stopped")
          // An unreachable Ollama leaves the statuses as they were, and the poll goes on.
          fake.faults.set("/api/ps", { kind: "status", status: 500 })
          yield* Effect.sleep("300 millis")
          fake.faults.delete("/api/ps")
          fake.running.add("polled:1b")
          yield* eventually(model.id, (current) => current.status === "running")
        }))
    }
  )
}

describe("status events across instances", () => {
  it.scopedLive("with REDIS_URL, a socket on any instance hears every change once, whichever instance made it", () =>
    Effect.gen(function*() {
      const prefix = yield* redisPrefix
      const shared = { REDIS_URL: redisUrl, REDIS_KEY_PREFIX: prefix, MODEL_STATUS_POLL_INTERVAL: "0 seconds" }
      const { a, b, on } = yield* startTwoInstances(shared)
      const admin = yield* signUp().pipe(on(a))
      const user = yield* signUp().pipe(on(a))
      const cast = Effect.provideService(TheCast, { admin, user })

      const fake = yield* fakeProvider("ollama", [{ name: "shared:1b" }])
      fake.running.add("shared:1b")
      const model = modelNamed((yield* syncedOllama(fake).pipe(cast, on(a))).models, "shared:1b")
      const onA = yield* openEvents(admin.accessToken).pipe(on(a))
      const onB = yield* openEvents(user.accessToken).pipe(on(b))
      yield* onA.next((message) => message.type === "snapshot")
      const snapshot = yield* onB.next((message) => message.type === "snapshot")
      expect(snapshot.models.find((entry: any) => entry.modelId === model.id)).toMatchObject({ status: "running" })

      const about = (message: any) => message.modelId === model.id
      // Made through A: heard on A (at once) and on B (through Redis).
      expectStatus(yield* asAdmin("POST", `/api/v1/models/${model.id}/stop`).pipe(cast, on(a)), 200)
      expect(yield* onA.next(about)).toMatchObject({ type: "model.status", status: "stopped" })
      expect(yield* onB.next(about)).toMatchObject({ type: "model.status", status: "stopped", usable: true })
      // Made through B: heard on both, and A hears nothing twice (its own events do not come back to it).
      expectStatus(yield* asAdmin("DELETE", `/api/v1/models/${model.id}`).pipe(cast, on(b)), 204)
      expect(yield* onA.next(about)).toMatchObject({ type: "model.removed" })
      expect(yield* onB.next(about)).toMatchObject({ type: "model.removed" })

      // Only channels under the instances' prefix were used (the events', and the relay's for answers
      // followed across instances): nothing else of theirs is in Redis.
      const channels = yield* withRedis((redis) => redis.pubsub("CHANNELS", `${prefix}*`) as Promise<Array<string>>)
      expect(channels.sort()).toEqual([`${prefix}answers`, `${prefix}events`])
    }))
})

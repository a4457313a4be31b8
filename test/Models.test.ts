/**
 * The model registry through the real server, against loopback providers
 * that speak Ollama's, OpenAI's and Anthropic's real APIs, on both dialects:
 * providers and their credentials, sync, start and stop, downloads, presets,
 * and provider faults answered as typed errors, never as hangs.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { call, type Reply, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects, pgClientFor } from "./fixtures/Database.js"
import { fakeProvider, unreachableUrl } from "./fixtures/Providers.js"
import { TestServer, testServer } from "./fixtures/Server.js"

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
}

class TheCast extends Context.Tag("test/Models/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.effect(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const user = yield* signUp()
      return { admin, user }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect, env: { MODEL_STATUS_POLL_INTERVAL: "0 seconds" } })))

const expectStatus = (reply: Reply, status: number) => {
  expect(reply.status, JSON.stringify(reply.body)).toBe(status)
  return reply.body
}

const expectError = (reply: Reply, status: number, tag: string) => {
  expect({ status: reply.status, _tag: reply.body?._tag }, JSON.stringify(reply.body)).toEqual({ status, _tag: tag })
}

let counter = 0
const uniqueName = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${counter++}`

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
          const listed = expectStatus(yield* asAdmin("GET", "/api/v1/providers"), 200)
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
          const listed = expectStatus(yield* asAdmin("GET", "/api/v1/providers"), 200)
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
          // Nothing was written by the failed syncs.
          expect(expectStatus(yield* asAdmin("GET", `/api/v1/models?providerId=${provider.id}`), 200)).toEqual([])
        }))
    })
  })
}

/**
 * Providers declared by the environment are registered when the server
 * starts, once: a restart with the same variables changes nothing, a changed
 * key replaces the stored one, and their models are listed in the background.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { ApiLive } from "../src/Http.js"
import { OllamaDefaultUrl } from "../src/Models/EnvironmentProviders.js"
import { dialects, freshDirectory, freshPgDatabase, pgClientFor, sqliteClientFor } from "./fixtures/Database.js"
import { fakeProvider } from "./fixtures/Providers.js"
import { TestServer, testServer } from "./fixtures/Server.js"

interface Row {
  readonly id: string
  readonly kind: string
  readonly name: string
  readonly baseUrl: string
  readonly source: string
  readonly credentialLast4: string | null
  readonly credentialCiphertext: string | null
}

for (const dialect of dialects) {
  describe(`providers from the environment on ${dialect}`, () => {
    it.scopedLive(
      "are registered idempotently at start-up, and their models synced; restarts end interrupted loads",
      () =>
        Effect.gen(function*() {
          const ollama = yield* fakeProvider("ollama", [{ name: "env-model:1b" }])
          const anthropic = yield* fakeProvider("anthropic", [{ name: "claude-env" }])
          const dataDir = yield* freshDirectory
          const databaseUrl = dialect === "pg" ? (yield* freshPgDatabase).url : undefined
          const database = databaseUrl ? pgClientFor(databaseUrl) : sqliteClientFor(dataDir)
          const query = <A extends object>(f: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<A>, unknown>) =>
            Effect.provide(Effect.flatMap(SqlClient.SqlClient, f), database).pipe(Effect.orDie)
          const providers = query((sql) => sql<Row>`SELECT * FROM providers ORDER BY kind`)

          const boot = (anthropicKey: string) =>
            Effect.gen(function*() {
              yield* TestServer
              // The models are listed in the background: wait for them.
              for (let attempt = 0; attempt < 100; attempt++) {
                const models = yield* query((sql) =>
                  sql<{ providerModel: string }>`SELECT provider_model FROM llm_models`
                )
                if (models.length >= 2) return models.map((model) => model.providerModel).sort()
                yield* Effect.sleep("50 millis")
              }
              return []
            }).pipe(
              Effect.provide(Layer.fresh(testServer({
                env: {
                  DATA_DIR: dataDir,
                  ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
                  OLLAMA_URL: ollama.url,
                  ANTHROPIC_API_KEY: anthropicKey,
                  ANTHROPIC_BASE_URL: anthropic.url
                }
              })))
            )

          expect(yield* boot(anthropic.apiKey)).toEqual(["claude-env", "env-model:1b"])
          const first = yield* providers
          expect(first.map(({ baseUrl, kind, name, source }) => ({ kind, name, baseUrl, source }))).toEqual([
            { kind: "anthropic", name: "Anthropic", baseUrl: anthropic.url, source: "environment" },
            { kind: "ollama", name: "Ollama", baseUrl: ollama.url, source: "environment" }
          ])
          expect(first[0]?.credentialLast4).toBe(anthropic.apiKey.slice(-4))
          expect(JSON.stringify(first)).not.toContain(anthropic.apiKey)

          // A download cut short by the restart does not stay `loading`. Ollama does not list the model
          // this time: the start-up sync would otherwise find it there and mark it available again.
          yield* query((sql) => sql`UPDATE llm_models SET status = 'loading' WHERE provider_model = 'env-model:1b'`)
          const listed = ollama.models.splice(0)
          yield* boot(anthropic.apiKey)
          ollama.models.push(...listed)
          expect(yield* providers).toEqual(first)
          const interrupted = yield* query((sql) =>
            sql<{ status: string; statusMessage: string }>`
            SELECT status, status_message FROM llm_models WHERE provider_model = 'env-model:1b'`
          )
          expect(interrupted).toEqual([{ status: "error", statusMessage: "Interrupted by a server restart" }])

          yield* boot("sk-ant-rotated-0000")
          const third = yield* providers
          expect(third.map((row) => row.id)).toEqual(first.map((row) => row.id))
          expect(third[0]?.credentialLast4).toBe("0000")
          expect(third[0]?.credentialCiphertext).not.toBe(first[0]?.credentialCiphertext)
        }),
      60_000
    )
  })
}

for (const dialect of dialects) {
  describe(`Ollama autodetection on ${dialect}`, () => {
    it.scopedLive(
      "registers the Ollama answering at the default address, without delaying start-up",
      () =>
        Effect.gen(function*() {
          const ollama = yield* fakeProvider("ollama", [{ name: "found:1b" }])
          ollama.faults.set("/api/tags", { kind: "slow", ms: 300 })
          const dataDir = yield* freshDirectory
          const databaseUrl = dialect === "pg" ? (yield* freshPgDatabase).url : undefined
          const database = databaseUrl ? pgClientFor(databaseUrl) : sqliteClientFor(dataDir)
          const providers = Effect.provide(
            Effect.flatMap(SqlClient.SqlClient, (sql) => sql<Row>`SELECT * FROM providers`),
            database
          ).pipe(Effect.orDie)
          const server = testServer(
            {
              env: {
                DATA_DIR: dataDir,
                ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
                OLLAMA_AUTODETECT: "true"
              }
            },
            ApiLive.pipe(Layer.provide(Layer.succeed(OllamaDefaultUrl, ollama.url)))
          )
          const registered = yield* Effect.gen(function*() {
            // Serving before the (slow) probe has answered.
            expect(yield* providers).toEqual([])
            for (let attempt = 0; attempt < 100; attempt++) {
              const rows = yield* providers
              if (rows.length > 0) return rows
              yield* Effect.sleep("50 millis")
            }
            return []
          }).pipe(Effect.provide(Layer.fresh(server)))
          expect(registered.map(({ baseUrl, kind, source }) => ({ kind, baseUrl, source }))).toEqual([
            { kind: "ollama", baseUrl: ollama.url, source: "environment" }
          ])
        }),
      60_000
    )

    it.scopedLive("is off under NODE_ENV=test unless asked: nothing is probed", () =>
      Effect.gen(function*() {
        const ollama = yield* fakeProvider("ollama", [])
        const dataDir = yield* freshDirectory
        const databaseUrl = dialect === "pg" ? (yield* freshPgDatabase).url : undefined
        const database = databaseUrl ? pgClientFor(databaseUrl) : sqliteClientFor(dataDir)
        yield* Effect.gen(function*() {
          yield* Effect.sleep("300 millis")
        }).pipe(Effect.provide(Layer.fresh(testServer(
          { env: { DATA_DIR: dataDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) } },
          ApiLive.pipe(Layer.provide(Layer.succeed(OllamaDefaultUrl, ollama.url)))
        ))))
        expect(ollama.requests).toEqual([])
        const rows = yield* Effect.provide(
          Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT * FROM providers`),
          database
        ).pipe(Effect.orDie)
        expect(rows).toEqual([])
      }), 60_000)
  })
}

/**
 * Semantic search over the knowledge graph over real HTTP (and RPC), on both dialects, with the job
 * queue running: a loopback OpenAI-compatible provider answers the extractions' JSON and embeds
 * with the development model's hashed bag of words (texts sharing words are closer), so every
 * ranking and score is known exactly. Entities embedded after an extraction, ranked, isolated per
 * user, embedded again when their text changes, gone with their entity; the backfill of a graph made
 * before the setting was on; the setting off; a model that cannot be used; a provider failing while
 * entities are embedded and while a search is.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { createHash } from "node:crypto"
import type * as Http from "node:http"
import { embedText } from "../src/Providers/Development.js"
import { call, createKey, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { conversationWith } from "./fixtures/Content.js"
import { dialects, freshDirectory, freshPgDatabase } from "./fixtures/Database.js"
import {
  embedPath,
  embedRequests,
  type FakeProvider,
  fakeProvider,
  type RecordedRequest,
  registerFake,
  upstreamSecret
} from "./fixtures/Providers.js"
import { as, overHttp, overWebSocket } from "./fixtures/Rpc.js"
import { backgroundWorkEnv, inServerDatabase, startTestServer, TestServer, testServer } from "./fixtures/Server.js"

const dimensions = 256
const embeddingModel = "text-embed"

const env = backgroundWorkEnv

/** The loopback's embeddings: the development model's vector of each text, one token per word. */
const bagOfWords = (request: RecordedRequest, response: Http.ServerResponse) => {
  const input: Array<string> = typeof request.body.input === "string" ? [request.body.input] : request.body.input
  const data = input.map((text, index) => ({ object: "embedding", index, embedding: embedText(text, dimensions) }))
  const tokens = input.reduce((count, text) => count + text.split(/\s+/).length, 0)
  response.writeHead(200, { "content-type": "application/json" })
  response.end(JSON.stringify({
    object: "list",
    data,
    model: request.body.model,
    usage: { prompt_tokens: tokens, total_tokens: tokens }
  }))
}

/** A provider serving a chat model and the embedding model, registered by `admin`. */
const providerFor = (admin: TestUser) =>
  Effect.gen(function*() {
    const openai = yield* fakeProvider("openai", [{ name: "gpt-graph" }, { name: embeddingModel }])
    openai.routes.set(`POST ${embedPath.openai}`, bagOfWords)
    const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
    return { openai, modelId: models["gpt-graph"]!, embeddingModelId: models[embeddingModel]! }
  })

interface Cast {
  readonly admin: TestUser
  readonly openai: FakeProvider
  readonly modelId: string
  readonly embeddingModelId: string
}

class TheCast extends Context.Tag("test/GraphSemantic/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      return { admin, ...(yield* providerFor(admin)) }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect, env: { ...env, EMBEDDING_MODEL: embeddingModel } })))

interface Entity {
  readonly name: string
  readonly type: string
  readonly description?: string
}

/** The model's next answers: these entities, no relationships. */
const modelFinds = (openai: FakeProvider, entities: ReadonlyArray<Entity>) => {
  openai.faults.clear()
  openai.chat = {
    text: [JSON.stringify({ entities: entities.map((entity) => ({ ...entity, confidence: 0.9 })), relationships: [] })]
  }
}

/** Has a conversation of the user's read for `entities`, and waits for the extraction to end. */
const extracted = (user: TestUser, entities: ReadonlyArray<Entity>) =>
  Effect.gen(function*() {
    const { modelId, openai } = yield* TheCast
    const conversationId = yield* conversationWith(user, [entities.map((entity) => entity.name).join(", ")])
    modelFinds(openai, entities)
    const queued = expectStatus(
      yield* call("POST", "/api/v1/graph/extractions", { auth: user.accessToken, body: { conversationId, modelId } }),
      202
    )
    for (let i = 0; i < 300; i++) {
      const current = expectStatus(
        yield* call("GET", `/api/v1/graph/extractions/${queued.id}`, { auth: user.accessToken }),
        200
      )
      if (current.status === "complete" || current.status === "error") return current
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage("the extraction did not end within 15 s")
  })

interface StoredEmbedding {
  readonly name: string
  readonly modelId: string
  readonly dimensions: number
  readonly vector: Uint8Array
  readonly textHash: string
}

/** The user's stored vectors, by entity name. */
const embeddingsOf = (user: TestUser) =>
  inServerDatabase(Effect.flatMap(
    SqlClient.SqlClient,
    (sql) =>
      sql<StoredEmbedding>`SELECT e.name, v.model_id, v.dimensions, v.vector, v.text_hash
        FROM graph_entity_embeddings v JOIN graph_entities e ON e.id = v.entity_id
        WHERE e.user_id = ${user.id} ORDER BY e.name`
  ))

/** Waits until `check` holds of the user's stored vectors (the embedding job runs after the extraction). */
const embeddedWhen = (user: TestUser, check: (rows: ReadonlyArray<StoredEmbedding>) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      const rows = yield* embeddingsOf(user)
      if (check(rows)) return rows
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage(`the embeddings never matched: ${JSON.stringify(yield* embeddingsOf(user))}`)
  })

const namesAre = (names: ReadonlyArray<string>) => (rows: ReadonlyArray<StoredEmbedding>) =>
  JSON.stringify(rows.map((row) => row.name)) === JSON.stringify(names)

const similar = (user: TestUser, query: Record<string, string>) =>
  call("GET", `/api/v1/graph/similar?${new URLSearchParams(query)}`, { auth: user.accessToken })

/** What the server embeds of an entity. */
const textOf = (entity: Entity) =>
  `${entity.name} (${entity.type})${entity.description ? `: ${entity.description}` : ""}`

/** The cosine the server should find: of the query's vector and the entity's as stored (float32). */
const expectedScore = (query: string, entity: Entity) => {
  const stored = Float32Array.from(embedText(textOf(entity), dimensions))
  return embedText(query, dimensions).reduce((sum, value, index) => sum + value * stored[index]!, 0)
}

const float32Bytes = (vector: ReadonlyArray<number>) => new Uint8Array(Float32Array.from(vector).buffer)

const ada: Entity = { name: "Ada Lovelace", type: "person", description: "Wrote the first program for the engine." }
const engine: Entity = {
  name: "Analytical Engine",
  type: "product",
  description: "A mechanical general purpose computer."
}
const london: Entity = { name: "London", type: "place", description: "Capital city of England." }

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`semantic graph search on ${dialect}`, (it) => {
    describe("embedding", () => {
      it.scoped("embeds an extraction's entities, in one request, and records the tokens as the graph's", () =>
        Effect.gen(function*() {
          const { embeddingModelId, openai } = yield* TheCast
          const user = yield* signUp()
          const before = embedRequests(openai).length
          const done = yield* extracted(user, [ada, engine, london])
          expect(done).toMatchObject({ status: "complete", entityCount: 3 })
          const rows = yield* embeddedWhen(user, namesAre(["Ada Lovelace", "Analytical Engine", "London"]))
          const sent = embedRequests(openai).slice(before)
          expect(sent).toHaveLength(1)
          expect(sent[0]!.body.model).toBe(embeddingModel)
          expect([...sent[0]!.body.input].sort()).toEqual([ada, engine, london].map(textOf).sort())
          for (const [row, entity] of rows.map((row, index) => [row, [ada, engine, london][index]!] as const)) {
            expect(row.modelId).toBe(embeddingModelId)
            expect(row.dimensions).toBe(dimensions)
            // float32, little-endian (this machine's order too), of length 1 as the loopback made it.
            expect(new Uint8Array(row.vector)).toEqual(float32Bytes(embedText(textOf(entity), dimensions)))
            expect(row.textHash).toBe(createHash("sha256").update(textOf(entity)).digest("hex"))
          }
          const usage = expectStatus(
            yield* call("GET", "/api/v1/me/usage?groupBy=source", { auth: user.accessToken }),
            200
          )
          // The loopback counts a token a word; the extraction's chat is recorded under its own source.
          const tokens = [ada, engine, london].reduce((count, entity) => count + textOf(entity).split(" ").length, 0)
          expect(tokens).toBe(24)
          expect(usage.groups).toContainEqual({
            key: "graph",
            source: "graph",
            requests: 1,
            promptTokens: tokens,
            completionTokens: 0,
            totalTokens: tokens
          })
          expect(usage.groups.map((group: { source: string }) => group.source).sort()).toEqual(["extraction", "graph"])
        }))

      it.scoped("embeds an entity again when its text changes, and its vector goes with it", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const hopper: Entity = { name: "Grace Hopper", type: "person" }
          yield* extracted(user, [hopper])
          const [first] = yield* embeddedWhen(user, namesAre(["Grace Hopper"]))
          expect(first!.textHash).toBe(createHash("sha256").update("Grace Hopper (person)").digest("hex"))

          // Found again with a description: the entity had none, so it takes this one.
          const described = { ...hopper, description: "Wrote the first compiler." }
          yield* extracted(user, [described])
          const [second] = yield* embeddedWhen(user, (rows) => rows[0]?.textHash !== first!.textHash)
          expect(second!.textHash).toBe(createHash("sha256").update(textOf(described)).digest("hex"))
          expect(new Uint8Array(second!.vector)).toEqual(float32Bytes(embedText(textOf(described), dimensions)))

          const entities = expectStatus(yield* call("GET", "/api/v1/graph/entities", { auth: user.accessToken }), 200)
          expectStatus(
            yield* call("DELETE", `/api/v1/graph/entities/${entities.items[0].id}`, { auth: user.accessToken }),
            204
          )
          expect(yield* embeddingsOf(user)).toEqual([])
          expect(expectStatus(yield* similar(user, { q: "compiler" }), 200).items).toEqual([])
        }))

      it.scoped("a provider failing while entities are embedded: the extraction completes, a later run embeds", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          const before = embedRequests(openai).length
          // Both of the job's attempts (JOBS_MAX_ATTEMPTS=2) fail; set after `modelFinds` clears faults.
          const conversationId = yield* conversationWith(user, ["Ada and the engine."])
          modelFinds(openai, [ada, engine])
          openai.faults.set(embedPath.openai, { kind: "status", status: 500, times: 2 })
          const queued = expectStatus(
            yield* call("POST", "/api/v1/graph/extractions", {
              auth: user.accessToken,
              body: { conversationId, modelId: (yield* TheCast).modelId }
            }),
            202
          )
          for (let i = 0; i < 200 && embedRequests(openai).length < before + 2; i++) yield* Effect.sleep("50 millis")
          expect(embedRequests(openai).length).toBe(before + 2)
          const extraction = expectStatus(
            yield* call("GET", `/api/v1/graph/extractions/${queued.id}`, { auth: user.accessToken }),
            200
          )
          expect(extraction).toMatchObject({ status: "complete", entityCount: 2, error: null })
          // Given up after the second attempt: nothing more is sent, nothing stored.
          yield* Effect.sleep("300 millis")
          expect(embedRequests(openai).length).toBe(before + 2)
          expect(yield* embeddingsOf(user)).toEqual([])

          // The next extraction embeds its entities and those left behind.
          yield* extracted(user, [london])
          yield* embeddedWhen(user, namesAre(["Ada Lovelace", "Analytical Engine", "London"]))
          expect(embedRequests(openai).length).toBe(before + 3)
        }))
    })

    describe("search", () => {
      it.scoped("ranks the caller's entities by meaning, best first, within limit and minScore", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          yield* extracted(user, [ada, engine, london])
          yield* embeddedWhen(user, (rows) => rows.length === 3)

          const query = "a mechanical computer engine"
          const found = expectStatus(yield* similar(user, { q: query }), 200)
          expect(found.items.map((item: any) => item.entity.name)).toEqual(
            [ada, engine, london].sort((a, b) => expectedScore(query, b) - expectedScore(query, a)).map((e) => e.name)
          )
          expect(found.items[0].entity).toMatchObject({ name: "Analytical Engine", type: "product", mentionCount: 1 })
          for (const item of found.items) {
            const entity = [ada, engine, london].find((candidate) => candidate.name === item.entity.name)!
            expect(item.score).toBeCloseTo(expectedScore(query, entity), 6)
          }
          expect(found.items[0].score).toBeGreaterThan(found.items[1].score)

          const capital = expectStatus(yield* similar(user, { q: "the capital city", limit: "1" }), 200)
          expect(capital.items.map((item: any) => item.entity.name)).toEqual(["London"])

          const threshold = (expectedScore(query, engine) + expectedScore(query, ada)) / 2
          const close = expectStatus(yield* similar(user, { q: query, minScore: String(threshold) }), 200)
          expect(close.items.map((item: any) => item.entity.name)).toEqual(["Analytical Engine"])

          // Bad parameters: 422 naming them, before anything is embedded.
          for (const bad of [{ q: "x", limit: "51" }, { q: "x", minScore: "2" }, { q: "   " }, { limit: "3" }]) {
            expect(expectStatus(yield* similar(user, bad), 422)._tag).toBe("ValidationError")
          }
        }))

      it.scoped("another user's entities never appear", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const other = yield* signUp()
          yield* extracted(user, [london])
          const turk: Entity = { name: "Mechanical Turk", type: "product", description: "A mechanical chess computer." }
          yield* extracted(other, [turk, engine])
          yield* embeddedWhen(user, (rows) => rows.length === 1)
          yield* embeddedWhen(other, (rows) => rows.length === 2)

          const mine = expectStatus(yield* similar(user, { q: "mechanical computer", limit: "50" }), 200)
          expect(mine.items.map((item: any) => item.entity.name)).toEqual(["London"])
          const theirs = expectStatus(yield* similar(other, { q: "mechanical computer", limit: "50" }), 200)
          expect(theirs.items.map((item: any) => item.entity.name).sort()).toEqual([
            "Analytical Engine",
            "Mechanical Turk"
          ])
          // It asks a model: a key that may read conversations but not use models is refused.
          const reader = yield* createKey(user, ["conversations:read"])
          const refused = yield* call("GET", "/api/v1/graph/similar?q=computer", { auth: reader.secret })
          expect([refused.status, refused.body._tag]).toEqual([403, "Forbidden"])
        }))

      it.scoped("the same over RPC, on HTTP and on a WebSocket", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const user = yield* signUp()
          yield* extracted(user, [ada, engine])
          yield* embeddedWhen(user, (rows) => rows.length === 2)
          for (
            const [transport, client] of [["http", yield* overHttp(baseUrl)], [
              "ws",
              yield* overWebSocket(baseUrl)
            ]] as const
          ) {
            const found = yield* as(user)(client.similarEntities({ q: "the first program", limit: 1 }))
            expect(found.items.map((item) => item.entity.name), transport).toEqual(["Ada Lovelace"])
          }
        }))

      it.scoped("a provider failing: the provider's typed error, nothing leaked", () =>
        Effect.gen(function*() {
          const { openai } = yield* TheCast
          const user = yield* signUp()
          openai.faults.set(embedPath.openai, { kind: "status", status: 500, times: 1 })
          const failed = expectStatus(yield* similar(user, { q: "anything" }), 502)
          expect(failed._tag).toBe("ProviderError")
          expect(typeof failed.message).toBe("string")
          expect(JSON.stringify(failed)).not.toContain(upstreamSecret)
          openai.faults.set(embedPath.openai, { kind: "hang", times: 1 })
          expect(expectStatus(yield* similar(user, { q: "anything" }), 504)._tag).toBe("ProviderTimeout")
          expect(expectStatus(yield* similar(user, { q: "anything" }), 200).items).toEqual([])
        }))

      it.scoped("a model that cannot be used: 503 saying why", () =>
        Effect.gen(function*() {
          const { admin, embeddingModelId } = yield* TheCast
          const user = yield* signUp()
          const setEnabled = (enabled: boolean) =>
            Effect.flatMap(
              call("PATCH", `/api/v1/models/${embeddingModelId}`, { auth: admin.accessToken, body: { enabled } }),
              (reply) => Effect.sync(() => expectStatus(reply, 200))
            )
          yield* setEnabled(false)
          const refused = yield* similar(user, { q: "anything" }).pipe(Effect.ensuring(setEnabled(true)))
          expect(expectStatus(refused, 503)).toEqual({
            _tag: "ServiceUnavailable",
            message: "Semantic search is unavailable: the embedding model 'text-embed' (EMBEDDING_MODEL) " +
              "is not a usable model"
          })
          expectStatus(yield* similar(user, { q: "anything" }), 200)
        }))
    })
  })

  describe(`semantic graph search switched on later, on ${dialect}`, () => {
    layer(Layer.empty, { excludeTestServices: true })((it) => {
      it.scoped("off: 404 saying so; on at the next start: the graph made meanwhile is embedded", () =>
        Effect.gen(function*() {
          // One data directory and database for both servers, kept until the test ends.
          const dataDir = yield* freshDirectory
          const database = dialect === "pg" ? yield* freshPgDatabase : undefined
          const stored = { DATA_DIR: dataDir, ...(database === undefined ? {} : { DATABASE_URL: database.url }) }
          const openai = yield* fakeProvider("openai", [{ name: "gpt-graph" }, { name: embeddingModel }])
          openai.routes.set(`POST ${embedPath.openai}`, bagOfWords)

          // The first server, without EMBEDDING_MODEL, stops before the second starts.
          const user = yield* Effect.scoped(Effect.gen(function*() {
            const off = yield* startTestServer(testServer({ env: { ...env, ...stored } }))
            return yield* Effect.provideService(
              Effect.gen(function*() {
                const admin = yield* signUp()
                const { models } = yield* registerFake(admin, openai)
                const user = yield* signUp()
                const conversationId = yield* conversationWith(user, ["London."])
                modelFinds(openai, [london])
                expectStatus(
                  yield* call("POST", "/api/v1/graph/extractions", {
                    auth: user.accessToken,
                    body: { conversationId, modelId: models["gpt-graph"] }
                  }),
                  202
                )
                for (let i = 0; i < 300; i++) {
                  const listed = expectStatus(
                    yield* call("GET", "/api/v1/graph/entities", { auth: user.accessToken }),
                    200
                  )
                  if (listed.items.length === 1) break
                  yield* Effect.sleep("50 millis")
                }
                expect(expectStatus(yield* similar(user, { q: "London" }), 404)).toEqual({
                  _tag: "NotFound",
                  message: "Semantic search is not configured on this server"
                })
                return user
              }),
              TestServer,
              off
            )
          }))
          expect(embedRequests(openai)).toEqual([])

          const on = yield* startTestServer(testServer({
            env: { ...env, ...stored, EMBEDDING_MODEL: embeddingModel }
          }))
          yield* Effect.provideService(
            Effect.gen(function*() {
              yield* embeddedWhen(user, namesAre(["London"]))
              const found = expectStatus(yield* similar(user, { q: "the capital of England" }), 200)
              expect(found.items.map((item: any) => item.entity.name)).toEqual(["London"])
            }),
            TestServer,
            // Its database is the one given it, not the one its fixture made.
            { ...on, dataDir, databaseUrl: database?.url }
          )
        }))
    })
  })
}

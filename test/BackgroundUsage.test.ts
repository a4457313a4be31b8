/**
 * The model work the server does in the background for a user, counted and held to the user's
 * budgets, over real HTTP and the job queue on both dialects: a file analysis, a knowledge-graph
 * extraction and a conversation's title each record the tokens a loopback provider reported, for
 * the user (and the API key the request came with), under the model and a source of their own; a
 * provider that reports none records nothing. Requesting an analysis, an extraction or a semantic
 * search goes through the chat turn's check: the token budget, which their tokens fill, and
 * `CHAT_RATE_LIMIT_PER_USER`, which they count against; a refused request queues nothing.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type { FileId, LlmModelId } from "../src/Domain/Ids.js"
import { call, createKey, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { passagesSettled, uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import {
  chatRequests,
  type ChatScript,
  embedRequests,
  type FakeProvider,
  fakeProvider,
  registerFake
} from "./fixtures/Providers.js"
import { as, failureTag, overHttp } from "./fixtures/Rpc.js"
import { backgroundWorkEnv, inServerDatabase, startTestServer, TestServer, testServer } from "./fixtures/Server.js"

const jobsEnv = backgroundWorkEnv

interface Cast {
  readonly openai: FakeProvider
  readonly modelId: string
}

class TheCast extends Context.Tag("test/BackgroundUsage/Cast")<TheCast, Cast>() {}

/** An administrator (the server's first account) with a loopback OpenAI model registered. */
const registered = Effect.gen(function*() {
  const admin = yield* signUp()
  const openai = yield* fakeProvider("openai", [{ name: "gpt-background" }])
  const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
  return { openai, modelId: models["gpt-background"]! }
})

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(TheCast, registered).pipe(Layer.provideMerge(testServer({ dialect, env: jobsEnv })))

/** The model's next answers: `text`, with the usage given (null: none reported). */
const modelAnswers = (openai: FakeProvider, text: string, usage: NonNullable<ChatScript["usage"]> | null) => {
  openai.faults.clear()
  openai.chat = { text: [text], usage }
}

const findings = JSON.stringify({ entities: [{ name: "Grace Hopper", type: "person", confidence: 0.9 }] })

/** Polls `path` until what it answers has ended (`complete` or `error`), 15 s at most. */
const settled = (auth: string, path: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 300; i++) {
      const body = expectStatus(yield* call("GET", path, { auth }), 200)
      if (body.status === "complete" || body.status === "error") return body
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage(`${path} did not end within 15 s`)
  })

const analyse = (auth: string, fileId: string, modelId: string) =>
  Effect.gen(function*() {
    const queued = expectStatus(
      yield* call("POST", `/api/v1/files/${fileId}/analyses`, { auth, body: { modelId } }),
      202
    )
    return yield* settled(auth, `/api/v1/files/${fileId}/analyses/${queued.id}`)
  })

const extract = (auth: string, fileId: string, modelId: string) =>
  Effect.gen(function*() {
    const queued = expectStatus(
      yield* call("POST", "/api/v1/graph/extractions", { auth, body: { fileId, modelId } }),
      202
    )
    return yield* settled(auth, `/api/v1/graph/extractions/${queued.id}`)
  })

/** `GET /api/v1/me/usage?groupBy=source`: the groups, by source. */
const usageBySource = (auth: string) =>
  Effect.map(call("GET", "/api/v1/me/usage?groupBy=source", { auth }), (reply) =>
    Object.fromEntries(
      expectStatus(reply, 200).groups.map((group: any) => [group.source, {
        requests: group.requests,
        promptTokens: group.promptTokens,
        completionTokens: group.completionTokens
      }])
    ))

interface UsageRow {
  readonly source: string
  readonly apiKeyId: string | null
  readonly modelId: string | null
  readonly modelName: string | null
  readonly promptTokens: number
  readonly completionTokens: number
}

/** The user's usage rows as stored, oldest first. */
const rowsOf = (user: TestUser) =>
  inServerDatabase(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<UsageRow>`SELECT source, api_key_id, model_id, model_name, prompt_tokens, completion_tokens
                  FROM usage_records WHERE user_id = ${user.id} ORDER BY created_at, id`)
  ).pipe(Effect.orDie)

const tokens = (promptTokens: number, completionTokens: number) => ({ promptTokens, completionTokens })

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`background usage on ${dialect}`, (it) => {
    describe("recorded", () => {
      it.scoped("an analysis, an extraction and a title each record their tokens under their own source", () =>
        Effect.gen(function*() {
          const { modelId, openai } = yield* TheCast
          const user = yield* signUp()
          const file = yield* uploadOne(user.accessToken, "hopper.txt", "Grace Hopper wrote the first compiler.\n")

          modelAnswers(openai, `{"summary": "About Grace Hopper."}`, tokens(11, 4))
          expect(yield* analyse(user.accessToken, file.id, modelId)).toMatchObject({ status: "complete" })
          modelAnswers(openai, findings, tokens(13, 6))
          expect(yield* extract(user.accessToken, file.id, modelId)).toMatchObject({
            status: "complete",
            entityCount: 1
          })

          // A new conversation without a title: its first answer (chat), then its title (title).
          modelAnswers(openai, "Compilers", tokens(5, 1))
          const first = expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: "Who wrote the first compiler?", modelId }
            }),
            200
          )
          for (let i = 0; i < 300; i++) {
            const conversation = yield* call("GET", `/api/v1/conversations/${first.conversationId}`, {
              auth: user.accessToken
            })
            if (conversation.body.title !== "") break
            yield* Effect.sleep("50 millis")
          }
          const titled = yield* call("GET", `/api/v1/conversations/${first.conversationId}`, { auth: user.accessToken })
          expect(titled.body.title).toBe("Compilers")
          // The title is written after its usage is recorded.
          expect(yield* usageBySource(user.accessToken)).toEqual({
            analysis: { requests: 1, ...tokens(11, 4) },
            extraction: { requests: 1, ...tokens(13, 6) },
            chat: { requests: 1, ...tokens(5, 1) },
            title: { requests: 1, ...tokens(5, 1) }
          })
          const model = { apiKeyId: null, modelId, modelName: "gpt-background" }
          expect(yield* rowsOf(user)).toEqual([
            { source: "analysis", ...model, ...tokens(11, 4) },
            { source: "extraction", ...model, ...tokens(13, 6) },
            { source: "chat", ...model, ...tokens(5, 1) },
            { source: "title", ...model, ...tokens(5, 1) }
          ])
          // Every one of them is spent from the user's budget.
          const budget = expectStatus(yield* call("GET", "/api/v1/me/budget", { auth: user.accessToken }), 200)
          expect(budget.spent).toBe(11 + 4 + 13 + 6 + 5 + 1 + 5 + 1)
        }))

      it.scoped("requested with an API key, an analysis and an extraction are the key's usage too", () =>
        Effect.gen(function*() {
          const { modelId, openai } = yield* TheCast
          const user = yield* signUp()
          const key = yield* createKey(user, [
            "files:read",
            "files:write",
            "models:use",
            "conversations:read",
            "conversations:write",
            "chat"
          ])
          const file = yield* uploadOne(user.accessToken, "key.txt", "Ada Lovelace wrote programs.\n")
          modelAnswers(openai, `{"summary": "About Ada."}`, tokens(9, 2))
          expect(yield* analyse(key.secret, file.id, modelId)).toMatchObject({ status: "complete" })
          modelAnswers(openai, findings, tokens(8, 3))
          expect(yield* extract(key.secret, file.id, modelId)).toMatchObject({ status: "complete" })
          // With the session: the user's alone.
          modelAnswers(openai, `{"summary": "Again."}`, tokens(1, 1))
          expect(yield* analyse(user.accessToken, file.id, modelId)).toMatchObject({ status: "complete" })
          expect((yield* rowsOf(user)).map((row) => [row.source, row.apiKeyId, row.promptTokens])).toEqual([
            ["analysis", key.id, 9],
            ["extraction", key.id, 8],
            ["analysis", null, 1]
          ])
          const keyUsage = expectStatus(
            yield* call("GET", `/api/v1/auth/api-keys/${key.id}/usage`, { auth: user.accessToken }),
            200
          )
          expect(keyUsage).toMatchObject({ requests: 2, promptTokens: 17, completionTokens: 5 })

          // A turn asked with the key starts a conversation: its title is the key's usage too.
          modelAnswers(openai, "Programs", tokens(4, 1))
          const turn = expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: key.secret,
              body: { content: "Who wrote programs?", modelId }
            }),
            200
          )
          for (let i = 0; i < 300; i++) {
            const conversation = yield* call("GET", `/api/v1/conversations/${turn.conversationId}`, {
              auth: user.accessToken
            })
            if (conversation.body.title !== "") break
            yield* Effect.sleep("50 millis")
          }
          expect((yield* rowsOf(user)).slice(3).map((row) => [row.source, row.apiKeyId, row.promptTokens])).toEqual([
            ["chat", key.id, 4],
            ["title", key.id, 4]
          ])
        }))

      it.scoped("a provider that reports no usage records nothing", () =>
        Effect.gen(function*() {
          const { modelId, openai } = yield* TheCast
          const user = yield* signUp()
          const file = yield* uploadOne(user.accessToken, "quiet.txt", "Nothing to count.\n")
          const before = chatRequests(openai).length
          modelAnswers(openai, `{"summary": "Quiet."}`, null)
          expect(yield* analyse(user.accessToken, file.id, modelId)).toMatchObject({
            status: "complete",
            analysis: { summary: "Quiet." }
          })
          modelAnswers(openai, findings, null)
          expect(yield* extract(user.accessToken, file.id, modelId)).toMatchObject({ status: "complete" })
          // The model was asked twice, and said nothing of its tokens.
          expect(chatRequests(openai).length - before).toBe(2)
          expect(yield* rowsOf(user)).toEqual([])
          expect(yield* usageBySource(user.accessToken)).toEqual({})
        }))
    })
  })

  describe(`background limits on ${dialect}`, () => {
    it.scopedLive("a user at their token budget is refused analyses, extractions and semantic searches (429), and nothing is queued", () =>
      Effect.gen(function*() {
        const server = yield* startTestServer(testServer({
          dialect,
          // Semantic search on (it checks the budget once it knows it is on): the loopback model embeds.
          env: {
            ...jobsEnv,
            TOKEN_BUDGET_PER_USER: "20",
            TOKEN_BUDGET_PERIOD: "day",
            EMBEDDING_MODEL: "gpt-background"
          }
        }))
        yield* Effect.provideService(overBudget, TestServer, server)
      }))

    it.scopedLive("analyses and extractions count against CHAT_RATE_LIMIT_PER_USER with chat turns", () =>
      Effect.gen(function*() {
        const server = yield* startTestServer(
          testServer({ dialect, env: { ...jobsEnv, CHAT_RATE_LIMIT_PER_USER: "2" } })
        )
        yield* Effect.provideService(rateLimited, TestServer, server)
      }))
  })
}

/** A refusal for the budget or the rate: 429 `RateLimited`, its `Retry-After` as its body says. */
const expectRefused = (reply: { status: number; body: any; headers: Record<string, string> }, message: RegExp) => {
  expect(reply.status, JSON.stringify(reply.body)).toBe(429)
  expect(reply.body).toEqual({
    _tag: "RateLimited",
    message: expect.stringMatching(message),
    retryAfterSeconds: expect.any(Number)
  })
  expect(reply.body.retryAfterSeconds).toBeGreaterThan(0)
  expect(Number(reply.headers["retry-after"])).toBe(reply.body.retryAfterSeconds)
}

/** What the user has queued: their analyses of `fileId` and their extractions. */
const queuedOf = (auth: string, fileId: string) =>
  Effect.gen(function*() {
    const analyses = expectStatus(yield* call("GET", `/api/v1/files/${fileId}/analyses`, { auth }), 200)
    const extractions = expectStatus(yield* call("GET", "/api/v1/graph/extractions", { auth }), 200)
    return { analyses: analyses.length as number, extractions: extractions.items.length as number }
  })

/** On a server whose budget is 20 tokens a day: one analysis of 25 tokens spends it. */
const overBudget = Effect.gen(function*() {
  const { modelId, openai } = yield* registered
  const user = yield* signUp()
  // The upload's passages are embedded too: at no cost here, so the analysis alone spends the budget.
  openai.embedding = { promptTokens: 0 }
  const file = yield* uploadOne(user.accessToken, "budget.txt", "Margaret Hamilton led the flight software team.\n")
  modelAnswers(openai, `{"summary": "About Margaret Hamilton."}`, tokens(20, 5))
  expect(yield* analyse(user.accessToken, file.id, modelId)).toMatchObject({ status: "complete" })
  const budget = expectStatus(yield* call("GET", "/api/v1/me/budget", { auth: user.accessToken }), 200)
  expect(budget).toMatchObject({ tokens: 20, spent: 25, remaining: 0 })

  const asked = chatRequests(openai).length
  const spent = /^Your token budget for this day \(20 tokens\) is spent; it renews at /
  expectRefused(
    yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: { modelId } }),
    spent
  )
  expectRefused(
    yield* call("POST", "/api/v1/graph/extractions", { auth: user.accessToken, body: { fileId: file.id, modelId } }),
    spent
  )
  expectRefused(yield* call("GET", "/api/v1/graph/similar?q=software", { auth: user.accessToken }), spent)
  // The same over RPC: the same service methods.
  const rpc = yield* overHttp((yield* TestServer).baseUrl)
  const fileId = file.id as FileId
  expect(
    failureTag(
      yield* Effect.exit(as(user)(rpc.requestAnalysis({ id: fileId, analysis: { modelId: modelId as LlmModelId } })))
    )
  ).toBe("RateLimited")
  expect(failureTag(yield* Effect.exit(as(user)(rpc.requestExtraction({ fileId }))))).toBe("RateLimited")

  // Nothing was queued or stored, and the model was not asked again.
  yield* Effect.sleep("300 millis")
  expect(yield* queuedOf(user.accessToken, file.id)).toEqual({ analyses: 1, extractions: 0 })
  expect(chatRequests(openai).length).toBe(asked)

  // Work no request of theirs pays for waits for the budget too: a file uploaded now has its passages
  // marked failed, the provider not asked to embed them.
  const embedsBefore = embedRequests(openai).length
  const late = yield* uploadOne(user.accessToken, "late.txt", "Ada Lovelace wrote the first program.\n")
  expect((yield* passagesSettled(user.accessToken, late.id)).passages.status).toBe("failed")
  expect(embedRequests(openai).length).toBe(embedsBefore)

  // Nor are the entities of an extraction that spent the budget embedded.
  const extractor = yield* signUp()
  const source = yield* uploadOne(extractor.accessToken, "source.txt", "Grace Hopper wrote the first compiler.\n")
  expect((yield* passagesSettled(extractor.accessToken, source.id)).passages.status).toBe("ready")
  modelAnswers(openai, findings, tokens(20, 5))
  expect(yield* extract(extractor.accessToken, source.id, modelId)).toMatchObject({ status: "complete" })
  yield* graphEmbeddingRan(extractor)
  expect(yield* embeddedEntities(extractor)).toBe(0)

  // Another user has a budget of their own: their entities are embedded.
  const other = yield* signUp()
  const theirs = yield* uploadOne(other.accessToken, "theirs.txt", "Katherine Johnson computed trajectories.\n")
  modelAnswers(openai, findings, tokens(3, 1))
  expect(yield* extract(other.accessToken, theirs.id, modelId)).toMatchObject({ status: "complete" })
  yield* graphEmbeddingRan(other)
  expect(yield* embeddedEntities(other)).toBe(1)
})

/** Waits until the user's knowledge-graph embedding jobs have all run (15 s at most). */
const graphEmbeddingRan = (user: TestUser) =>
  Effect.gen(function*() {
    for (let i = 0; i < 300; i++) {
      const pending = yield* inServerDatabase(Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql<{ completed: boolean | number }>`SELECT completed FROM job_queue
          WHERE queue_name = 'graph-embedding' AND element LIKE ${`%${user.id}%`}`)).pipe(Effect.orDie)
      if (
        pending.length > 0 && pending.every((row) =>
          Boolean(row.completed)
        )
      ) return
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage("the graph's embedding job did not run within 15 s")
  })

/** How many of the user's entities have a vector. */
const embeddedEntities = (user: TestUser) =>
  inServerDatabase(
    Effect.flatMap(SqlClient.SqlClient, (sql) =>
      sql<{ count: number | string }>`SELECT count(*) AS count FROM graph_entity_embeddings v
      JOIN graph_entities e ON e.id = v.entity_id WHERE e.user_id = ${user.id}`)
  ).pipe(
    Effect.map((rows) =>
      Number(rows[0]!.count)
    ),
    Effect.orDie
  )

/** On a server that allows two answers a minute per user: an analysis and an extraction take both. */
const rateLimited = Effect.gen(function*() {
  const { modelId, openai } = yield* registered
  const user = yield* signUp()
  const file = yield* uploadOne(user.accessToken, "rate.txt", "Frances Allen worked on optimizing compilers.\n")
  // Searches that are off on this server (no EMBEDDING_MODEL) are 404 and use up nothing.
  for (const path of ["/api/v1/graph/similar?q=compilers", `/api/v1/files/${file.id}/passages?q=compilers`]) {
    expect(expectStatus(yield* call("GET", path, { auth: user.accessToken }), 404)._tag).toBe("NotFound")
  }
  modelAnswers(openai, `{"summary": "About Frances Allen."}`, tokens(2, 1))
  expect(yield* analyse(user.accessToken, file.id, modelId)).toMatchObject({ status: "complete" })
  modelAnswers(openai, findings, tokens(2, 1))
  expect(yield* extract(user.accessToken, file.id, modelId)).toMatchObject({ status: "complete" })

  const tooMany = /^Too many answers asked for/
  const conversation = expectStatus(
    yield* call("POST", "/api/v1/conversations", { auth: user.accessToken, body: { title: "Rates" } }),
    201
  )
  expectRefused(
    yield* call("POST", `/api/v1/conversations/${conversation.id}/chat`, {
      auth: user.accessToken,
      body: { content: "One more?", modelId }
    }),
    tooMany
  )
  expectRefused(
    yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: { modelId } }),
    tooMany
  )
  expectRefused(
    yield* call("POST", "/api/v1/graph/extractions", { auth: user.accessToken, body: { fileId: file.id, modelId } }),
    tooMany
  )
  expect(yield* queuedOf(user.accessToken, file.id)).toEqual({ analyses: 1, extractions: 1 })
})

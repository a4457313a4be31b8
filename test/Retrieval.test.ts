/**
 * Retrieval of attached files' passages over real HTTP (and RPC), on both dialects, with the job
 * queue running: a loopback OpenAI-compatible provider embeds with the development model's hashed
 * bag of words (texts sharing words are closer) and records the chat requests it receives, so the
 * passages a turn sends are known exactly. A long document's passages made after its upload; a
 * question about a fact deep in it sent that passage; a short file sent whole; passages not ready,
 * the embedder failing during a turn and retrieval off: the text as before; the passages endpoint
 * ranks and isolates; a deleted file's passages gone.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type * as Http from "node:http"
import { embedText } from "../src/Providers/Development.js"
import { call, createKey, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { passagesSettled, uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import {
  chatPath,
  embedPath,
  embedRequests,
  type FakeProvider,
  fakeProvider,
  type RecordedRequest,
  registerFake
} from "./fixtures/Providers.js"
import { as, overHttp } from "./fixtures/Rpc.js"
import { backgroundWorkEnv, inServerDatabase, startTestServer, TestServer, testServer } from "./fixtures/Server.js"

const dimensions = 256
const embeddingModel = "text-embed"
const maxChars = 6_000

const env = { ...backgroundWorkEnv, FILE_ANALYSIS_MAX_CHARS: String(maxChars) }

/** The loopback's embeddings: the development model's vector of each text. */
const bagOfWords = (request: RecordedRequest, response: Http.ServerResponse) => {
  const input: Array<string> = typeof request.body.input === "string" ? [request.body.input] : request.body.input
  const data = input.map((text, index) => ({ object: "embedding", index, embedding: embedText(text, dimensions) }))
  response.writeHead(200, { "content-type": "application/json" })
  response.end(
    JSON.stringify({ object: "list", data, model: request.body.model, usage: { prompt_tokens: 1, total_tokens: 1 } })
  )
}

const fact = "The secret launch code of the Zephyr rocket is PURPLEWALRUS."

/**
 * About 36,000 characters of minutes, a paragraph a topic, with the fact in paragraph 180 of 240:
 * far past `FILE_ANALYSIS_MAX_CHARS`.
 */
const longDocument = Array.from({ length: 240 }, (_, index) =>
  index === 180
    ? `Section ${index}. ${fact} Nobody else may know it.`
    : `Section ${index}. The committee reviewed item topic${index} and its schedule, budget and staffing, ` +
      `and agreed to revisit topic${index} at the next quarterly meeting of the board.`).join("\n\n")

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
  readonly other: TestUser
  readonly openai: FakeProvider
  readonly modelId: string
}

class TheCast extends Context.Tag("test/Retrieval/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number], extra: Record<string, string>) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const [user, other] = yield* Effect.all([signUp(), signUp()])
      const openai = yield* fakeProvider("openai", [{ name: "gpt-docs", contextLength: 128_000 }, {
        name: embeddingModel
      }])
      openai.routes.set(`POST ${embedPath.openai}`, bagOfWords)
      const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
      return { admin, user, other, openai, modelId: models["gpt-docs"]! }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect, env: { ...env, ...extra } })))

/** The user messages of the last chat request the provider received. */
const lastQuestionSent = (openai: FakeProvider): string => {
  const sent = openai.requests.filter((request) => request.path === chatPath.openai).at(-1)!
  const users = (sent.body.messages as Array<{ role: string; content: string }>).filter((m) => m.role === "user")
  return users.at(-1)!.content
}

const ask = (user: TestUser, modelId: string, fileId: string, content: string) =>
  Effect.gen(function*() {
    return expectStatus(
      yield* call("POST", "/api/v1/chat", {
        auth: user.accessToken,
        body: { content, title: "Docs", modelId, fileIds: [fileId] }
      }),
      200
    )
  })

const question = "What is the secret launch code of the Zephyr rocket?"

/** The user's usage rows of source `files`: one per embeddings request made for their files. */
const filesUsageRows = (user: TestUser) =>
  inServerDatabase(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ count: number | string }>`
      SELECT count(*) AS count FROM usage_records WHERE user_id = ${user.id} AND source = 'files'`
    return Number(rows[0]!.count)
  }))

for (const dialect of dialects) {
  describe(`Retrieval of files' passages (${dialect})`, () => {
    layer(withCast(dialect, { EMBEDDING_MODEL: embeddingModel }), { excludeTestServices: true, timeout: "60 seconds" })(
      (it) => {
        it.scoped("a long document is split and embedded after its upload; a question gets the passage it asks about", () =>
          Effect.gen(function*() {
            const { modelId, openai, user } = yield* TheCast
            openai.faults.clear()
            openai.chat = { text: ["PURPLEWALRUS."] }
            const file = yield* uploadOne(user.accessToken, "minutes.md", longDocument, "text/markdown")
            const view = yield* passagesSettled(user.accessToken, file.id)
            expect(view.passages.status).toBe("ready")
            const stored = yield* inServerDatabase(Effect.gen(function*() {
              const sql = yield* SqlClient.SqlClient
              return yield* sql<{ position: number; text: string; startOffset: number; endOffset: number }>`
              SELECT position, text, start_offset, end_offset FROM file_passages WHERE file_id = ${file.id}
              ORDER BY position`
            }))
            expect(stored.length).toBe(view.passages.count)
            expect(stored.length).toBeGreaterThan(15)
            for (const passage of stored) {
              expect(passage.text.length).toBeLessThanOrEqual(2_000)
              expect(longDocument.slice(Number(passage.startOffset), Number(passage.endOffset))).toBe(passage.text)
            }
            const holding = stored.find((passage) => passage.text.includes(fact))!

            // The passages' embeddings count as the user's usage, one row a request.
            const usageBefore = yield* filesUsageRows(user)
            expect(usageBefore).toBeGreaterThan(0)
            const embedsBefore = embedRequests(openai).length
            yield* ask(user, modelId, file.id, question)
            // One embedding per turn with a long attachment: the question's, counted too.
            expect(embedRequests(openai).length).toBe(embedsBefore + 1)
            expect(yield* filesUsageRows(user)).toBe(usageBefore + 1)
            const sent = lastQuestionSent(openai)
            const header =
              `${question}\n\n<attachment name="minutes.md" type="text/markdown">\n[Excerpts: this file is ` +
              "too long to send whole."
            expect(sent.startsWith(header)).toBe(true)
            expect(sent.endsWith("\n</attachment>")).toBe(true)
            const first = sent.indexOf("[passage ")
            expect(sent.slice(first)).toMatch(
              new RegExp(`^\\[passage ${holding.position + 1} of ${stored.length}\\]\\n`)
            )
            expect(sent.slice(first).split("\n")[1]).toBe(holding.text.split("\n")[0])
            expect(sent).toContain("PURPLEWALRUS")
            // Excerpts, not the text as far as it was cut.
            expect(sent).not.toContain(longDocument.slice(0, maxChars))
          }))

        it.scoped("a short file is still sent whole, with no embedding", () =>
          Effect.gen(function*() {
            const { modelId, openai, user } = yield* TheCast
            openai.faults.clear()
            openai.chat = { text: ["Eggs."] }
            const file = yield* uploadOne(user.accessToken, "list.txt", "eggs, flour")
            expect((yield* passagesSettled(user.accessToken, file.id)).passages).toEqual({ status: "ready", count: 1 })
            const embedsBefore = embedRequests(openai).length
            yield* ask(user, modelId, file.id, "What do I need?")
            expect(embedRequests(openai).length).toBe(embedsBefore)
            expect(lastQuestionSent(openai)).toBe(
              `What do I need?\n\n<attachment name="list.txt" type="text/plain">\neggs, flour\n</attachment>`
            )
          }))

        it.scoped("passages not ready: the text as far as FILE_ANALYSIS_MAX_CHARS", () =>
          Effect.gen(function*() {
            const { modelId, openai, user } = yield* TheCast
            openai.faults.clear()
            openai.chat = { text: ["No idea."] }
            openai.faults.set(embedPath.openai, { kind: "status", status: 500 })
            const file = yield* uploadOne(user.accessToken, "notready.md", longDocument, "text/markdown")
            const view = yield* passagesSettled(user.accessToken, file.id)
            expect(view.passages).toEqual({ status: "failed", count: 0 })
            openai.faults.clear()
            yield* ask(user, modelId, file.id, question)
            expect(lastQuestionSent(openai)).toBe(
              `${question}\n\n<attachment name="notready.md" type="text/markdown">\n${
                longDocument.slice(0, maxChars)
              }\n</attachment>`
            )
          }))

        it.scoped("the embedder failing during a turn: the turn still answers, with the text as before", () =>
          Effect.gen(function*() {
            const { modelId, openai, user } = yield* TheCast
            openai.faults.clear()
            openai.chat = { text: ["Still here."] }
            const file = yield* uploadOne(user.accessToken, "failing.md", longDocument, "text/markdown")
            expect((yield* passagesSettled(user.accessToken, file.id)).passages.status).toBe("ready")
            openai.faults.set(embedPath.openai, { kind: "status", status: 500 })
            const result = yield* ask(user, modelId, file.id, question)
            openai.faults.clear()
            expect(result.answer.content).toBe("Still here.")
            expect(lastQuestionSent(openai)).toBe(
              `${question}\n\n<attachment name="failing.md" type="text/markdown">\n${
                longDocument.slice(0, maxChars)
              }\n</attachment>`
            )
          }))

        it.scoped("the passages endpoint ranks a file's passages and answers only its owner", () =>
          Effect.gen(function*() {
            const { openai, other, user } = yield* TheCast
            openai.faults.clear()
            const file = yield* uploadOne(user.accessToken, "ranked.md", longDocument, "text/markdown")
            const view = yield* passagesSettled(user.accessToken, file.id)
            const found = expectStatus(
              yield* call("GET", `/api/v1/files/${file.id}/passages?q=${encodeURIComponent(question)}&limit=3`, {
                auth: user.accessToken
              }),
              200
            )
            expect(found.total).toBe(view.passages.count)
            expect(found.items).toHaveLength(3)
            expect(found.items[0].text).toContain(fact)
            const scores = found.items.map((item: { score: number }) => item.score)
            expect([...scores].sort((a, b) => b - a)).toEqual(scores)
            expect(scores[0]).toBeGreaterThan(scores[2])

            const client = yield* overHttp((yield* TestServer).baseUrl)
            const viaRpc = yield* as(user)(client.filePassages({ id: file.id, q: question, limit: 1 }))
            expect(viaRpc.items.map((item) => item.position)).toEqual([found.items[0].position])

            const stranger = yield* call("GET", `/api/v1/files/${file.id}/passages?q=launch`, {
              auth: other.accessToken
            })
            expect(stranger.status).toBe(404)
            expect(stranger.body._tag).toBe("NotFound")
            expectStatus(yield* call("GET", `/api/v1/files/${file.id}/passages`, { auth: user.accessToken }), 422)
            // It asks a model: a key that may read files but not use models is refused.
            const reader = yield* createKey(user, ["files:read"])
            const refused = yield* call("GET", `/api/v1/files/${file.id}/passages?q=launch`, { auth: reader.secret })
            expect([refused.status, refused.body._tag]).toEqual([403, "Forbidden"])
          }))

        it.scoped("passages the provider failed to make are not asked for again by a turn (the next start-up does)", () =>
          Effect.gen(function*() {
            const { modelId, openai, user } = yield* TheCast
            openai.faults.clear()
            openai.chat = { text: ["No idea."] }
            openai.faults.set(embedPath.openai, { kind: "status", status: 500, times: 100 })
            const file = yield* uploadOne(user.accessToken, "failing.md", longDocument, "text/markdown")
            expect((yield* passagesSettled(user.accessToken, file.id)).passages.status).toBe("failed")
            openai.faults.clear()
            const jobsOf = inServerDatabase(Effect.gen(function*() {
              const sql = yield* SqlClient.SqlClient
              const rows = yield* sql<{ n: number | string }>`SELECT count(*) AS n FROM job_queue
                WHERE queue_name = 'file-embedding' AND element LIKE ${`%${file.id}%`}`
              return Number(rows[0]!.n)
            }))
            const before = yield* jobsOf
            yield* ask(user, modelId, file.id, question)
            yield* Effect.sleep("300 millis")
            expect(yield* jobsOf).toBe(before)
            expect((yield* passagesSettled(user.accessToken, file.id)).passages.status).toBe("failed")
          }))

        it.scoped("a deleted file's passages are gone", () =>
          Effect.gen(function*() {
            const { openai, user } = yield* TheCast
            openai.faults.clear()
            const file = yield* uploadOne(user.accessToken, "gone.md", longDocument, "text/markdown")
            yield* passagesSettled(user.accessToken, file.id)
            const count = inServerDatabase(Effect.gen(function*() {
              const sql = yield* SqlClient.SqlClient
              const [passages] = yield* sql<
                { n: number }
              >`SELECT COUNT(*) AS n FROM file_passages WHERE file_id = ${file.id}`
              const [sets] = yield* sql<
                { n: number }
              >`SELECT COUNT(*) AS n FROM file_passage_sets WHERE file_id = ${file.id}`
              return [Number(passages!.n), Number(sets!.n)]
            }))
            expect((yield* count)[0]).toBeGreaterThan(0)
            expectStatus(yield* call("DELETE", `/api/v1/files/${file.id}`, { auth: user.accessToken }), 204)
            expect(yield* count).toEqual([0, 0])
          }))
      }
    )

    layer(
      withCast(dialect, { EMBEDDING_MODEL: embeddingModel, TOKEN_BUDGET_PER_USER: "1", TOKEN_BUDGET_PERIOD: "day" }),
      { excludeTestServices: true, timeout: "60 seconds" }
    )((it) => {
      it.scoped("a spent budget: an upload's passages are not made; a turn attaching the file after it renews makes them", () =>
        Effect.gen(function*() {
          const { admin, modelId, openai, user } = yield* TheCast
          openai.faults.clear()
          openai.chat = { text: ["PURPLEWALRUS."] }
          // One embeddings request (one token) spends the budget.
          const warm = yield* uploadOne(user.accessToken, "warm.md", "A short note about rockets.\n", "text/markdown")
          expect((yield* passagesSettled(user.accessToken, warm.id)).passages.status).toBe("ready")
          const embeds = embedRequests(openai).length
          const file = yield* uploadOne(user.accessToken, "minutes.md", longDocument, "text/markdown")
          expect((yield* passagesSettled(user.accessToken, file.id)).passages).toEqual({ status: "failed", count: 0 })
          expect(embedRequests(openai)).toHaveLength(embeds)
          expect(yield* filesUsageRows(user)).toBe(1)
          expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: question, title: "Docs", modelId, fileIds: [file.id] }
            }),
            429
          )

          // A role with a larger budget (the built-in roles cannot be changed).
          const roles = expectStatus(yield* call("GET", "/api/v1/admin/roles", { auth: admin.accessToken }), 200)
          const userRole = roles.find((role: { name: string }) => role.name === "user")
          expectStatus(
            yield* call("POST", "/api/v1/admin/roles", {
              auth: admin.accessToken,
              body: { name: "reader", permissions: userRole.permissions, tokenBudget: 1_000_000 }
            }),
            201
          )
          expectStatus(
            yield* call("PUT", `/api/v1/admin/users/${user.id}/role`, {
              auth: admin.accessToken,
              body: { role: "reader" }
            }),
            200
          )
          // This turn sends the text as far as it goes, and asks for the passages again.
          yield* ask(user, modelId, file.id, question)
          expect(lastQuestionSent(openai)).not.toContain(fact)
          for (let i = 0; i < 300; i++) {
            const view = expectStatus(yield* call("GET", `/api/v1/files/${file.id}`, { auth: user.accessToken }), 200)
            if (view.passages.status === "ready") break
            yield* Effect.sleep("50 millis")
          }
          yield* ask(user, modelId, file.id, question)
          expect(lastQuestionSent(openai)).toContain(fact)
        }))
    })

    layer(withCast(dialect, {}), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
      it.scoped("no embedding model: the text as before, no passages, the endpoint 404", () =>
        Effect.gen(function*() {
          const { modelId, openai, user } = yield* TheCast
          openai.chat = { text: ["No idea."] }
          const file = yield* uploadOne(user.accessToken, "plain.md", longDocument, "text/markdown")
          expect(file.passages).toEqual({ status: "off", count: 0 })
          yield* ask(user, modelId, file.id, question)
          expect(lastQuestionSent(openai)).toBe(
            `${question}\n\n<attachment name="plain.md" type="text/markdown">\n${
              longDocument.slice(0, maxChars)
            }\n</attachment>`
          )
          expect(embedRequests(openai)).toHaveLength(0)
          const off = yield* call("GET", `/api/v1/files/${file.id}/passages?q=launch`, { auth: user.accessToken })
          expect(off.status).toBe(404)
          expect(off.body.message).toBe("Retrieval of files' passages is not configured on this server")
        }))
    })
  })
}

describe("Retrieval with several instances (pg)", () => {
  it.scopedLive(
    "an instance starting while uploads are embedded queues no second job for their passages, nor embeds them again",
    () =>
      Effect.gen(function*() {
        const first = yield* startTestServer(
          testServer({ dialect: "pg", env: { ...env, EMBEDDING_MODEL: embeddingModel } })
        )
        const on = Effect.provideService(TestServer, first)
        const admin = yield* signUp().pipe(on)
        const user = yield* signUp().pipe(on)
        const openai = yield* fakeProvider("openai", [{ name: embeddingModel }])
        yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 5_000 }).pipe(on)
        // Embeddings answer slowly: the uploads' jobs are still running when the second instance starts,
        // and its start-up backfill finds the same files without passages.
        openai.routes.set(`POST ${embedPath.openai}`, (request, response) => {
          setTimeout(() => bagOfWords(request, response), 1_500)
        })
        const files = [
          yield* uploadOne(user.accessToken, "one.md", "The first note.\n", "text/markdown").pipe(on),
          yield* uploadOne(user.accessToken, "two.md", "The second note.\n", "text/markdown").pipe(on)
        ]
        yield* startTestServer(testServer({
          env: { ...env, EMBEDDING_MODEL: embeddingModel, DATABASE_URL: first.databaseUrl!, DATA_DIR: first.dataDir }
        }))

        const sets = inServerDatabase(Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{ status: string }>`SELECT status FROM file_passage_sets`
        })).pipe(on)
        for (let i = 0; i < 300; i++) {
          const made = yield* sets
          if (made.length === files.length && made.every((set) => set.status === "ready")) break
          yield* Effect.sleep("50 millis")
        }
        expect((yield* sets).map((set) => set.status)).toEqual(["ready", "ready"])
        // Long enough for a duplicate job to have been taken and sent its request.
        yield* Effect.sleep("2 seconds")
        const jobs = yield* inServerDatabase(Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          return yield* sql<{ element: string }>`SELECT element FROM job_queue WHERE queue_name = 'file-embedding'`
        })).pipe(on)
        expect(jobs.map((job) => JSON.parse(job.element).fileId).sort()).toEqual(files.map((file) => file.id).sort())
        expect(embedRequests(openai)).toHaveLength(2)
      }),
    { timeout: 60_000 }
  )
})

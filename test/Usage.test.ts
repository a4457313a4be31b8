/**
 * Token usage reports through the real server, on both dialects: your own
 * (`GET /api/v1/me/usage`) and every user's (`GET /api/v1/admin/usage`), in
 * total and grouped per model, day, source or user, within a time range.
 * Usage comes from real chat turns and gateway completions in front of a
 * loopback provider, and from rows written straight into the database at
 * chosen times (for days and the range's bounds).
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { generateUuid } from "../src/Domain/Ids.js"
import { call, createKey, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { chatPath, type FakeProvider, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { inServerDatabase, TestServer, testServer } from "./fixtures/Server.js"
import { openSse } from "./fixtures/Sse.js"
import { waitFor } from "./fixtures/Wait.js"

const query = (params: Record<string, string | undefined>) => {
  const search = new URLSearchParams()
  for (const [name, value] of Object.entries(params)) if (value !== undefined) search.set(name, value)
  return search.size > 0 ? `?${search}` : ""
}

const myUsage = (auth: string, params: Record<string, string | undefined> = {}) =>
  call("GET", `/api/v1/me/usage${query(params)}`, { auth })

const usageReport = (auth: string, params: Record<string, string | undefined> = {}) =>
  call("GET", `/api/v1/admin/usage${query(params)}`, { auth })

/** What a group or the totals hold. */
const counts = (requests: number, promptTokens: number, completionTokens: number) => ({
  requests,
  promptTokens,
  completionTokens,
  totalTokens: promptTokens + completionTokens
})

const none = counts(0, 0, 0)

// --- the cast

interface Cast {
  readonly admin: TestUser
  /** Has the rows of `march` only. */
  readonly alice: TestUser
  /** Has one row of `march`. */
  readonly bob: TestUser
  readonly openai: FakeProvider
  /** The loopback's two models, by id. */
  readonly alpha: string
  readonly beta: string
}

class TheCast extends Context.Tag("test/Usage/Cast")<TheCast, Cast>() {}

interface Row {
  readonly userId: string
  readonly modelId: string | null
  readonly modelName: string | null
  readonly source: "gateway" | "chat"
  readonly promptTokens: number
  readonly completionTokens: number
  readonly createdAt: string
}

/** Usage rows written as the server writes them, at chosen times. */
const insertUsage = (rows: ReadonlyArray<Row>) =>
  inServerDatabase(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (const row of rows) {
      const id = yield* generateUuid
      yield* sql`INSERT INTO usage_records ${sql.insert({ id, apiKeyId: null, ...row })}`
    }
  }))

/** March 2021: nobody else has usage then, so the admin's report over it holds these rows only. */
const march = { from: "2021-03-01T00:00:00.000Z", to: "2021-04-01T00:00:00.000Z" } as const

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const [alice, bob] = yield* Effect.all([signUp(), signUp()])
      const openai = yield* fakeProvider("openai", [{ name: "alpha-chat" }, { name: "beta-chat" }])
      const { models } = yield* registerFake(admin, openai)
      const alpha = models["alpha-chat"]!
      const beta = models["beta-chat"]!
      const of = (user: TestUser, modelId: string | null, modelName: string | null) => ({
        userId: user.id,
        modelId,
        modelName
      })
      yield* insertUsage([
        {
          ...of(alice, alpha, "alpha-chat"),
          source: "gateway",
          promptTokens: 10,
          completionTokens: 5,
          createdAt: "2021-03-01T00:00:00.000Z"
        },
        {
          ...of(alice, alpha, "alpha-chat"),
          source: "chat",
          promptTokens: 20,
          completionTokens: 10,
          createdAt: "2021-03-01T23:59:59.999Z"
        },
        {
          ...of(alice, beta, "beta-chat"),
          source: "gateway",
          promptTokens: 100,
          completionTokens: 50,
          createdAt: "2021-03-02T00:00:00.000Z"
        },
        // A model deleted since: its rows keep the name it had.
        {
          ...of(alice, null, "gone-chat"),
          source: "chat",
          promptTokens: 1,
          completionTokens: 1,
          createdAt: "2021-03-03T12:00:00.000Z"
        },
        {
          ...of(bob, alpha, "alpha-chat"),
          source: "gateway",
          promptTokens: 7,
          completionTokens: 3,
          createdAt: "2021-03-02T10:00:00.000Z"
        }
      ])
      return { admin, alice, bob, openai, alpha, beta }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect })))

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`usage reports on ${dialect}`, (it) => {
    describe("your own usage", () => {
      it.effect("sums real chat turns and gateway completions, per source, model and day", () =>
        Effect.gen(function*() {
          const { admin, alpha, openai } = yield* TheCast
          const carol = yield* signUp()
          const startedDay = new Date().toISOString().slice(0, 10)
          openai.chat = { text: ["Chatted"], usage: { promptTokens: 11, completionTokens: 4 } }
          const chatted = yield* call("POST", "/api/v1/chat", {
            auth: carol.accessToken,
            body: { content: "Count me", modelId: alpha, title: "Usage" }
          })
          expect(expectStatus(chatted, 200).answer.status).toBe("complete")
          const gatewayKey = yield* createKey(carol, ["models:read", "models:use"])
          openai.chat = { text: ["Completed"], usage: { promptTokens: 5, completionTokens: 2 } }
          expectStatus(
            yield* call("POST", "/v1/chat/completions", {
              auth: gatewayKey.secret,
              body: { model: "alpha-chat", messages: [{ role: "user", content: "Count me too" }] }
            }),
            200
          )
          // The gateway writes its usage as the request's scope closes, just after the answer went out.
          let bySource: any
          for (let attempt = 0; attempt < 50; attempt++) {
            bySource = expectStatus(yield* myUsage(carol.accessToken, { groupBy: "source" }), 200)
            if (bySource.totals.requests === 2) break
            yield* Effect.sleep("50 millis")
          }
          expect(bySource).toEqual({
            from: null,
            to: null,
            groupBy: "source",
            totals: counts(2, 16, 6),
            groups: [
              { key: "chat", source: "chat", ...counts(1, 11, 4) },
              { key: "gateway", source: "gateway", ...counts(1, 5, 2) }
            ]
          })
          // The default grouping is per model.
          expect(expectStatus(yield* myUsage(carol.accessToken), 200)).toEqual({
            from: null,
            to: null,
            groupBy: "model",
            totals: counts(2, 16, 6),
            groups: [{ key: alpha, modelId: alpha, modelName: "alpha-chat", ...counts(2, 16, 6) }]
          })
          const byDay = expectStatus(yield* myUsage(carol.accessToken, { groupBy: "day" }), 200)
          const endedDay = new Date().toISOString().slice(0, 10)
          expect(byDay.totals).toEqual(counts(2, 16, 6))
          for (const group of byDay.groups) {
            expect([startedDay, endedDay]).toContain(group.day)
            expect(group.key).toBe(group.day)
          }

          // A key allowed to manage its owner's keys reads its owner's usage (all of it, not only its own).
          const manager = yield* createKey(carol, ["keys:manage"])
          expect(expectStatus(yield* myUsage(manager.secret, { groupBy: "source" }), 200)).toEqual(bySource)
          // A key that may only use models may not.
          expect(expectStatus(yield* myUsage(gatewayKey.secret), 403)._tag).toBe("Forbidden")
          expectStatus(yield* myUsage(""), 401)

          // The admin sees the same rows in everyone's report, filtered to Carol.
          const carols = expectStatus(
            yield* usageReport(admin.accessToken, { userId: carol.id, groupBy: "user" }),
            200
          )
          expect(carols.groups).toEqual([
            { key: carol.id, userId: carol.id, username: carol.username, ...counts(2, 16, 6) }
          ])
        }))

      it.effect("groups per model (most tokens first), per day (oldest first) and per source", () =>
        Effect.gen(function*() {
          const { alice, alpha, beta } = yield* TheCast
          const byModel = expectStatus(yield* myUsage(alice.accessToken, { groupBy: "model" }), 200)
          expect(byModel).toEqual({
            from: null,
            to: null,
            groupBy: "model",
            totals: counts(4, 131, 66),
            groups: [
              { key: beta, modelId: beta, modelName: "beta-chat", ...counts(1, 100, 50) },
              { key: alpha, modelId: alpha, modelName: "alpha-chat", ...counts(2, 30, 15) },
              { key: "gone-chat", modelId: null, modelName: "gone-chat", ...counts(1, 1, 1) }
            ]
          })
          const byDay = expectStatus(yield* myUsage(alice.accessToken, { groupBy: "day" }), 200)
          expect(byDay.groups).toEqual([
            // The last millisecond of a UTC day is still that day.
            { key: "2021-03-01", day: "2021-03-01", ...counts(2, 30, 15) },
            { key: "2021-03-02", day: "2021-03-02", ...counts(1, 100, 50) },
            { key: "2021-03-03", day: "2021-03-03", ...counts(1, 1, 1) }
          ])
          expect(byDay.totals).toEqual(counts(4, 131, 66))
          const bySource = expectStatus(yield* myUsage(alice.accessToken, { groupBy: "source" }), 200)
          expect(bySource.groups).toEqual([
            { key: "gateway", source: "gateway", ...counts(2, 110, 55) },
            { key: "chat", source: "chat", ...counts(2, 21, 11) }
          ])
        }))

      it.effect("counts rows from `from` on (inclusive) and before `to` (exclusive), to the millisecond", () =>
        Effect.gen(function*() {
          const { alice } = yield* TheCast
          const within = (from: string, to: string) =>
            Effect.map(myUsage(alice.accessToken, { from, to, groupBy: "day" }), (reply) => expectStatus(reply, 200))
          // The row at 23:59:59.999 is in; the one at midnight, exactly `to`, is out.
          const lastMillisecond = yield* within("2021-03-01T23:59:59.999Z", "2021-03-02T00:00:00.000Z")
          expect(lastMillisecond).toEqual({
            from: "2021-03-01T23:59:59.999Z",
            to: "2021-03-02T00:00:00.000Z",
            groupBy: "day",
            totals: counts(1, 20, 10),
            groups: [{ key: "2021-03-01", day: "2021-03-01", ...counts(1, 20, 10) }]
          })
          // Midnight, exactly `from`, is in; 12:00 on the 3rd, exactly `to`, is out. Times without milliseconds or
          // in another zone mean the same instants.
          const nextDay = yield* within("2021-03-02T01:00:00+01:00", "2021-03-03T12:00:00Z")
          expect(nextDay.from).toBe("2021-03-02T00:00:00.000Z")
          expect(nextDay.totals).toEqual(counts(1, 100, 50))
          expect(nextDay.groups.map((group: { day: string }) => group.day)).toEqual(["2021-03-02"])
          // One millisecond later, the row at 12:00 is in.
          expect((yield* within("2021-03-02T00:00:00.000Z", "2021-03-03T12:00:00.001Z")).totals).toEqual(
            counts(2, 101, 51)
          )
          // Only `from`, only `to`.
          const since = expectStatus(yield* myUsage(alice.accessToken, { from: "2021-03-02T00:00:00.000Z" }), 200)
          expect(since.totals).toEqual(counts(2, 101, 51))
          expect(since.to).toBeNull()
          const before = expectStatus(yield* myUsage(alice.accessToken, { to: "2021-03-02T00:00:00.000Z" }), 200)
          expect(before.totals).toEqual(counts(2, 30, 15))
          // An empty range is an empty report.
          const empty = yield* within("2021-03-02T00:00:00.000Z", "2021-03-02T00:00:00.000Z")
          expect(empty).toMatchObject({ totals: none, groups: [] })
        }))

      it.effect("refuses a range that ends before it starts, and an unknown grouping (422 on the field)", () =>
        Effect.gen(function*() {
          const { admin, alice } = yield* TheCast
          const backwards = { from: "2021-03-02T00:00:00.000Z", to: "2021-03-01T00:00:00.000Z" }
          for (
            const reply of [
              yield* myUsage(alice.accessToken, backwards),
              yield* usageReport(admin.accessToken, backwards)
            ]
          ) {
            expect(expectStatus(reply, 422)).toEqual({
              _tag: "ValidationError",
              message: "`from` is after `to`",
              issues: [{ path: ["from"], message: "`from` is after `to`" }]
            })
          }
          const weekly = expectStatus(yield* myUsage(alice.accessToken, { groupBy: "week" }), 422)
          expect(weekly).toMatchObject({ _tag: "ValidationError", issues: [{ path: ["groupBy"] }] })
          expect(typeof weekly.message).toBe("string")
          // Per user is for the administrators' report only.
          const perUser = expectStatus(yield* myUsage(alice.accessToken, { groupBy: "user" }), 422)
          expect(perUser.issues.map((issue: { path: unknown }) => issue.path)).toEqual([["groupBy"]])
          const notADate = expectStatus(yield* myUsage(alice.accessToken, { from: "yesterday" }), 422)
          expect(notADate.issues.map((issue: { path: unknown }) => issue.path)).toEqual([["from"]])
          const notAUser = expectStatus(yield* usageReport(admin.accessToken, { userId: "someone" }), 422)
          expect(notAUser.issues.map((issue: { path: unknown }) => issue.path)).toEqual([["userId"]])
        }))

      it.effect("counts an answer cut before its usage came by estimate, and nothing when the provider answered nothing", () =>
        Effect.gen(function*() {
          const { alpha, openai } = yield* TheCast
          const dave = yield* signUp()
          // A refusal before any answer: the provider produced nothing to count.
          openai.faults.set(chatPath.openai, { kind: "status", status: 400, times: 1 })
          const refused = yield* call("POST", "/api/v1/chat", {
            auth: dave.accessToken,
            body: { content: "Refuse me", modelId: alpha, title: "Refused" }
          })
          expect(refused.status).toBe(502)
          expect(expectStatus(yield* myUsage(dave.accessToken), 200).totals).toEqual(none)

          // An answer that breaks after its first piece, before the usage the provider reports at the end.
          openai.chat = { text: ["Good", " bad"], fault: { kind: "malformed", afterChunks: 1 } }
          const cut = yield* call("POST", "/api/v1/chat", {
            auth: dave.accessToken,
            body: { content: "Cut me short", modelId: alpha, title: "Cut" }
          })
          expect(cut.status).toBe(502)
          // "Cut me short": 12 characters, 3 tokens, and 4 for the message; "Good": 1 token.
          expect(expectStatus(yield* myUsage(dave.accessToken), 200)).toMatchObject({
            totals: counts(1, 7, 1),
            groups: [{ key: alpha, modelId: alpha, ...counts(1, 7, 1) }]
          })
        }))

      it.scoped("counts the prompt of an answer given up before its first token: a cancel, a client that left", () =>
        Effect.gen(function*() {
          const { alpha, openai } = yield* TheCast
          const erin = yield* signUp()
          openai.chat = { text: ["Late"], firstChunkDelayMs: 800 }
          const asked = openai.requests.length
          const stream = yield* openSse("POST", "/api/v1/chat", {
            auth: erin.accessToken,
            body: { content: "Cancel me", modelId: alpha, title: "Cancelled" }
          })
          const answer = (yield* stream.next)!.data.answer
          yield* waitFor(() => openai.requests.length > asked, "the provider to be asked")
          const path = `/api/v1/conversations/${answer.conversationId}/messages/${answer.id}/cancel`
          expect(expectStatus(yield* call("POST", path, { auth: erin.accessToken }), 200)).toMatchObject({
            status: "cancelled",
            content: ""
          })
          // "Cancel me": 9 characters, 3 tokens, and 4 for the message; nothing came.
          expect(expectStatus(yield* myUsage(erin.accessToken), 200).totals).toEqual(counts(1, 7, 0))

          const key = yield* createKey(erin, ["models:use"])
          const controller = new AbortController()
          const before = openai.requests.length
          const { baseUrl } = yield* TestServer
          const pending = fetch(`${baseUrl}/v1/chat/completions`, {
            method: "POST",
            signal: controller.signal,
            headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
            body: JSON.stringify({ model: "alpha-chat", messages: [{ role: "user", content: "Leave me" }] })
          }).catch((error: unknown) => error)
          yield* waitFor(() => openai.requests.length > before, "the provider to be asked")
          controller.abort()
          yield* Effect.promise(() => pending)
          // "Leave me": 8 characters, 2 tokens, and 4 for the message.
          let totals: unknown
          for (let attempt = 0; attempt < 50; attempt++) {
            totals = expectStatus(yield* myUsage(erin.accessToken), 200).totals
            if ((totals as { requests: number }).requests === 2) break
            yield* Effect.sleep("50 millis")
          }
          expect(totals).toEqual(counts(2, 13, 0))
        }))

      it.effect("shows a user their own usage only", () =>
        Effect.gen(function*() {
          const { alpha, bob } = yield* TheCast
          expect(expectStatus(yield* myUsage(bob.accessToken), 200)).toEqual({
            from: null,
            to: null,
            groupBy: "model",
            totals: counts(1, 7, 3),
            groups: [{ key: alpha, modelId: alpha, modelName: "alpha-chat", ...counts(1, 7, 3) }]
          })
          const newcomer = yield* signUp()
          expect(expectStatus(yield* myUsage(newcomer.accessToken, { groupBy: "day" }), 200)).toMatchObject({
            totals: none,
            groups: []
          })
        }))
    })

    describe("every user's usage", () => {
      it.effect("groups per user, model, day and source, for administrators; one user with `userId`", () =>
        Effect.gen(function*() {
          const { admin, alice, alpha, beta, bob } = yield* TheCast
          const byUser = expectStatus(yield* usageReport(admin.accessToken, { ...march, groupBy: "user" }), 200)
          expect(byUser).toEqual({
            ...march,
            groupBy: "user",
            totals: counts(5, 138, 69),
            groups: [
              { key: alice.id, userId: alice.id, username: alice.username, ...counts(4, 131, 66) },
              { key: bob.id, userId: bob.id, username: bob.username, ...counts(1, 7, 3) }
            ]
          })
          const byModel = expectStatus(yield* usageReport(admin.accessToken, march), 200)
          expect(byModel.groupBy).toBe("model")
          expect(byModel.groups).toEqual([
            { key: beta, modelId: beta, modelName: "beta-chat", ...counts(1, 100, 50) },
            { key: alpha, modelId: alpha, modelName: "alpha-chat", ...counts(3, 37, 18) },
            { key: "gone-chat", modelId: null, modelName: "gone-chat", ...counts(1, 1, 1) }
          ])
          const byDay = expectStatus(yield* usageReport(admin.accessToken, { ...march, groupBy: "day" }), 200)
          expect(byDay.groups).toEqual([
            { key: "2021-03-01", day: "2021-03-01", ...counts(2, 30, 15) },
            { key: "2021-03-02", day: "2021-03-02", ...counts(2, 107, 53) },
            { key: "2021-03-03", day: "2021-03-03", ...counts(1, 1, 1) }
          ])
          const bySource = expectStatus(yield* usageReport(admin.accessToken, { ...march, groupBy: "source" }), 200)
          expect(bySource.groups).toEqual([
            { key: "gateway", source: "gateway", ...counts(3, 117, 58) },
            { key: "chat", source: "chat", ...counts(2, 21, 11) }
          ])
          const bobs = expectStatus(
            yield* usageReport(admin.accessToken, { ...march, userId: bob.id, groupBy: "source" }),
            200
          )
          expect(bobs.totals).toEqual(counts(1, 7, 3))
          expect(bobs.groups).toEqual([{ key: "gateway", source: "gateway", ...counts(1, 7, 3) }])
        }))

      it.effect("is refused to anyone but administrators (403), and to anonymous callers (401)", () =>
        Effect.gen(function*() {
          const { alice } = yield* TheCast
          const refused = expectStatus(yield* usageReport(alice.accessToken, { groupBy: "user" }), 403)
          expect(refused).toMatchObject({ _tag: "Forbidden", message: expect.any(String) })
          const key = yield* createKey(alice, ["keys:manage"])
          expect(expectStatus(yield* usageReport(key.secret), 403)._tag).toBe("Forbidden")
          expect(expectStatus(yield* usageReport(""), 401)._tag).toBe("Unauthorized")
        }))

      it.effect("leaves out an erased user: their rows went with them", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const dave = yield* signUp()
          yield* insertUsage([{
            userId: dave.id,
            modelId: null,
            modelName: "gone-chat",
            source: "chat",
            promptTokens: 3,
            completionTokens: 3,
            createdAt: "2021-05-05T05:05:05.005Z"
          }])
          const may = { from: "2021-05-01T00:00:00.000Z", to: "2021-06-01T00:00:00.000Z", groupBy: "user" }
          const before = expectStatus(yield* usageReport(admin.accessToken, may), 200)
          expect(before.groups).toEqual([
            { key: dave.id, userId: dave.id, username: dave.username, ...counts(1, 3, 3) }
          ])
          expectStatus(yield* call("DELETE", `/api/v1/admin/users/${dave.id}`, { auth: admin.accessToken }), 204)
          expect(expectStatus(yield* usageReport(admin.accessToken, may), 200)).toMatchObject({
            totals: none,
            groups: []
          })
        }))
    })
  })
}

/**
 * Feedback on answers through the real server, on both dialects: a user rates the answers of their
 * own conversations (and replaces and takes back their ratings), reads them back per conversation,
 * and administrators read everyone's per model and one by one. Answers come from real chat turns
 * against a loopback provider with two models; the report's time window is tested on ratings moved
 * to chosen times in the database.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Exit, Layer } from "effect"
import { call, expectStatus, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { type FakeProvider, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { as, overHttp } from "./fixtures/Rpc.js"
import { inServerDatabase, TestServer, testServer } from "./fixtures/Server.js"

const query = (params: Record<string, string | number | undefined>) => {
  const search = new URLSearchParams()
  for (const [name, value] of Object.entries(params)) if (value !== undefined) search.set(name, String(value))
  return search.size > 0 ? `?${search}` : ""
}

const feedbackPath = (conversationId: string, messageId: string) =>
  `/api/v1/conversations/${conversationId}/messages/${messageId}/feedback`

const rate = (user: TestUser, answer: Answer, body: unknown) =>
  call("PUT", feedbackPath(answer.conversationId, answer.id), { auth: user.accessToken, body })

const unrate = (user: TestUser, answer: Answer) =>
  call("DELETE", feedbackPath(answer.conversationId, answer.id), { auth: user.accessToken })

const ratingsOf = (user: TestUser, conversationId: string) =>
  call("GET", `/api/v1/conversations/${conversationId}/feedback`, { auth: user.accessToken })

const summary = (user: TestUser, params: Record<string, string | undefined> = {}) =>
  call("GET", `/api/v1/admin/feedback/summary${query(params)}`, { auth: user.accessToken })

const entries = (user: TestUser, params: Record<string, string | number | undefined> = {}) =>
  call("GET", `/api/v1/admin/feedback${query(params)}`, { auth: user.accessToken })

interface Answer {
  readonly id: string
  readonly conversationId: string
  /** The question it answers. */
  readonly questionId: string
}

/** A chat turn of `user` with `modelId`: in a new titled conversation (no title job), or in `conversationId`. */
const ask = (user: TestUser, modelId: string, conversationId?: string) =>
  Effect.gen(function*() {
    const reply = conversationId === undefined
      ? yield* call("POST", "/api/v1/chat", {
        auth: user.accessToken,
        body: { content: "Tell me something", modelId, title: "Rated" }
      })
      : yield* call("POST", `/api/v1/conversations/${conversationId}/chat`, {
        auth: user.accessToken,
        body: { content: "And more", modelId }
      })
    const body = expectStatus(reply, 200)
    expect(body.answer.status).toBe("complete")
    return { id: body.answer.id, conversationId: body.conversationId, questionId: body.question.id } as Answer
  })

/** Every rating row of a message, as stored. */
const storedRatings = (messageId: string) =>
  inServerDatabase(Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ readonly id: string }>`SELECT id FROM message_feedback WHERE message_id = ${messageId}`
  ))

const reasonsZero = {
  accurate: 0,
  helpful: 0,
  inaccurate: 0,
  incomplete: 0,
  off_topic: 0,
  unsafe: 0,
  too_long: 0,
  other: 0
}

// --- the cast

interface Cast {
  readonly admin: TestUser
  readonly alice: TestUser
  readonly bob: TestUser
  readonly openai: FakeProvider
  /** The loopback's two models, by id. */
  readonly alpha: string
  readonly beta: string
}

class TheCast extends Context.Tag("test/Feedback/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const [alice, bob] = yield* Effect.all([signUp(), signUp()])
      const openai = yield* fakeProvider("openai", [{ name: "alpha-chat" }, { name: "beta-chat" }])
      const { models } = yield* registerFake(admin, openai)
      return { admin, alice, bob, openai, alpha: models["alpha-chat"]!, beta: models["beta-chat"]! }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect })))

/** March 2021: no rating is given then but those a test moves there. */
const march = { from: "2021-03-01T00:00:00.000Z", to: "2021-04-01T00:00:00.000Z" } as const

/** Moves a rating to a chosen time (as if given then). */
const givenAt = (feedbackId: string, at: string) =>
  inServerDatabase(Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`UPDATE message_feedback SET created_at = ${at}, updated_at = ${at} WHERE id = ${feedbackId}`
  ))

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`feedback on answers on ${dialect}`, (it) => {
    describe("your ratings", () => {
      it.effect("rates an answer, replaces the rating, lists it and takes it back", () =>
        Effect.gen(function*() {
          const { alice, alpha } = yield* TheCast
          const answer = yield* ask(alice, alpha)
          const other = yield* ask(alice, alpha, answer.conversationId)
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200)).toEqual({
            items: [],
            nextCursor: null
          })

          const first = expectStatus(
            yield* rate(alice, answer, { rating: "up", reasons: ["helpful", "accurate", "helpful"], comment: "Nice" }),
            200
          )
          expect(first).toMatchObject({
            conversationId: answer.conversationId,
            messageId: answer.id,
            rating: "up",
            // Each once, in the vocabulary's order.
            reasons: ["accurate", "helpful"],
            comment: "Nice",
            modelId: alpha,
            modelName: "alpha-chat"
          })
          expect(first.updatedAt).toBe(first.createdAt)
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([first])

          // Rated again: replaced, the same entry, first given when it was.
          const second = expectStatus(yield* rate(alice, answer, { rating: "down", comment: "" }), 200)
          expect(second).toMatchObject({
            id: first.id,
            rating: "down",
            reasons: [],
            comment: null,
            createdAt: first.createdAt
          })
          expect(Date.parse(second.updatedAt)).toBeGreaterThanOrEqual(Date.parse(first.createdAt))
          const otherRating = expectStatus(
            yield* rate(alice, other, { rating: "down", reasons: ["other", "too_long"] }),
            200
          )
          expect(otherRating.reasons).toEqual(["too_long", "other"])
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([
            second,
            otherRating
          ])
          expect(yield* storedRatings(answer.id)).toHaveLength(1)

          // Taken back: gone; taking it back again finds nothing.
          expect((yield* unrate(alice, answer)).status).toBe(204)
          expect(expectStatus(yield* unrate(alice, answer), 404)._tag).toBe("NotFound")
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([otherRating])
          expect(yield* storedRatings(answer.id)).toHaveLength(0)

          // A deleted answer's rating is not listed, and the answer can be rated no more.
          expectStatus(
            yield* call("DELETE", `/api/v1/conversations/${other.conversationId}/messages/${other.id}`, {
              auth: alice.accessToken
            }),
            204
          )
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([])
          expect(expectStatus(yield* rate(alice, other, { rating: "up" }), 404)._tag).toBe("NotFound")
          expect(expectStatus(yield* unrate(alice, other), 404)._tag).toBe("NotFound")
        }))

      it.effect("another user's conversation or answer is not found, and stays as it was", () =>
        Effect.gen(function*() {
          const { admin, alice, alpha, bob } = yield* TheCast
          const answer = yield* ask(alice, alpha)
          const rated = expectStatus(yield* rate(alice, answer, { rating: "up", comment: "Mine" }), 200)
          for (const stranger of [bob, admin]) {
            expect(expectStatus(yield* rate(stranger, answer, { rating: "down" }), 404)._tag).toBe("NotFound")
            expect(expectStatus(yield* unrate(stranger, answer), 404)._tag).toBe("NotFound")
            expect(expectStatus(yield* ratingsOf(stranger, answer.conversationId), 404)._tag).toBe("NotFound")
          }
          // Bob's own answer, named under Alice's conversation, is not in it.
          const bobs = yield* ask(bob, alpha)
          expectStatus(yield* rate(alice, { ...bobs, conversationId: answer.conversationId }, { rating: "up" }), 404)
          expectStatus(yield* rate(bob, { ...answer, conversationId: bobs.conversationId }, { rating: "up" }), 404)
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([rated])
          expect(expectStatus(yield* ratingsOf(bob, bobs.conversationId), 200).items).toEqual([])

          // A conversation in the trash takes no rating, and keeps the one it has.
          expectStatus(
            yield* call("DELETE", `/api/v1/conversations/${answer.conversationId}`, { auth: alice.accessToken }),
            204
          )
          expectStatus(yield* rate(alice, answer, { rating: "down" }), 404)
          expectStatus(yield* unrate(alice, answer), 404)
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([rated])
        }))

      it.effect("refuses bad ratings, and what was stored stays as it was", () =>
        Effect.gen(function*() {
          const { alice, alpha } = yield* TheCast
          const answer = yield* ask(alice, alpha)
          const rated = expectStatus(yield* rate(alice, answer, { rating: "up", reasons: ["helpful"] }), 200)
          const unchanged = () =>
            Effect.gen(function*() {
              expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([rated])
            })

          const refused = (body: unknown, field: string) =>
            Effect.gen(function*() {
              const error = expectStatus(yield* rate(alice, answer, body), 422)
              expect(error._tag).toBe("ValidationError")
              expect(typeof error.message).toBe("string")
              expect(error.issues.map((issue: { path: Array<string> }) => issue.path[0])).toContain(field)
              yield* unchanged()
            })
          yield* refused({ rating: "down", reasons: ["helpful", "rude"] }, "reasons")
          yield* refused({ rating: "down", comment: "x".repeat(2001) }, "comment")
          yield* refused({ rating: "meh" }, "rating")
          yield* refused({ rating: 1 }, "rating")
          yield* refused({ reasons: ["helpful"] }, "rating")

          // The question is a user message: only answers are rated.
          const question = { ...answer, id: answer.questionId }
          const error = expectStatus(yield* rate(alice, question, { rating: "down" }), 422)
          expect(error.issues[0].path).toEqual(["messageId"])
          expect(yield* storedRatings(question.id)).toHaveLength(0)
          yield* unchanged()

          // An answer still being written: not yet.
          yield* inServerDatabase(Effect.flatMap(
            SqlClient.SqlClient,
            (sql) => sql`UPDATE messages SET status = 'streaming' WHERE id = ${answer.id}`
          ))
          expect(expectStatus(yield* rate(alice, answer, { rating: "down" }), 409)._tag).toBe("Conflict")
          yield* inServerDatabase(Effect.flatMap(
            SqlClient.SqlClient,
            (sql) => sql`UPDATE messages SET status = 'complete' WHERE id = ${answer.id}`
          ))
          yield* unchanged()

          // The longest comment is taken whole.
          const long = expectStatus(yield* rate(alice, answer, { rating: "down", comment: "y".repeat(2000) }), 200)
          expect(long.comment).toHaveLength(2000)
        }))
    })

    describe("administrators' report", () => {
      it.effect("counts up, down, the share of up and reasons per model, within from and to", () =>
        Effect.gen(function*() {
          const { admin, alpha, beta } = yield* TheCast
          const [carol, dave] = yield* Effect.all([signUp(), signUp()])
          const rated: Array<{ id: string; at: string }> = []
          const rateAt = (user: TestUser, modelId: string, body: unknown, at: string) =>
            Effect.gen(function*() {
              const answer = yield* ask(user, modelId)
              const given = expectStatus(yield* rate(user, answer, body), 200)
              yield* givenAt(given.id, at)
              rated.push({ id: given.id, at })
            })
          // In March: alpha up, up (from carol and dave), down; beta down, down, up.
          yield* rateAt(carol, alpha, { rating: "up", reasons: ["helpful", "accurate"] }, march.from)
          yield* rateAt(dave, alpha, { rating: "up", reasons: ["helpful"] }, "2021-03-10T12:00:00.000Z")
          yield* rateAt(
            carol,
            alpha,
            { rating: "down", reasons: ["too_long"], comment: "Long" },
            "2021-03-11T00:00:00.000Z"
          )
          yield* rateAt(
            carol,
            beta,
            { rating: "down", reasons: ["inaccurate", "incomplete"] },
            "2021-03-12T00:00:00.000Z"
          )
          yield* rateAt(dave, beta, { rating: "down", reasons: ["inaccurate"] }, "2021-03-31T23:59:59.999Z")
          yield* rateAt(dave, beta, { rating: "up" }, "2021-03-20T00:00:00.000Z")
          // Outside it: `to` is exclusive, and February is before `from`.
          yield* rateAt(carol, alpha, { rating: "down", reasons: ["unsafe"] }, march.to)
          yield* rateAt(dave, beta, { rating: "up", reasons: ["unsafe"] }, "2021-02-28T23:59:59.999Z")

          const report = expectStatus(yield* summary(admin, march), 200)
          expect(report).toEqual({
            from: march.from,
            to: march.to,
            totals: {
              up: 3,
              down: 3,
              total: 6,
              upShare: 0.5,
              reasons: { ...reasonsZero, helpful: 2, accurate: 1, too_long: 1, inaccurate: 2, incomplete: 1 }
            },
            // As many ratings each: by name.
            models: [
              {
                key: alpha,
                modelId: alpha,
                modelName: "alpha-chat",
                up: 2,
                down: 1,
                total: 3,
                upShare: 2 / 3,
                reasons: { ...reasonsZero, helpful: 2, accurate: 1, too_long: 1 }
              },
              {
                key: beta,
                modelId: beta,
                modelName: "beta-chat",
                up: 1,
                down: 2,
                total: 3,
                upShare: 1 / 3,
                reasons: { ...reasonsZero, inaccurate: 2, incomplete: 1 }
              }
            ]
          })

          // Narrower: from the 11th on, the most rated first.
          const late = expectStatus(yield* summary(admin, { from: "2021-03-11T00:00:00.000Z", to: march.to }), 200)
          expect(late.models.map((model: any) => [model.modelName, model.up, model.down])).toEqual([
            ["beta-chat", 1, 2],
            ["alpha-chat", 0, 1]
          ])
          expect(late.totals).toMatchObject({ up: 1, down: 3, total: 4, upShare: 0.25 })

          // An empty window: no models, no share.
          expect(expectStatus(yield* summary(admin, { from: march.from, to: march.from }), 200)).toEqual({
            from: march.from,
            to: march.from,
            totals: { up: 0, down: 0, total: 0, upShare: null, reasons: reasonsZero },
            models: []
          })
          const backwards = expectStatus(yield* summary(admin, { from: march.to, to: march.from }), 422)
          expect(backwards.issues[0].path).toEqual(["from"])
          expectStatus(yield* summary(admin, { from: "yesterday" }), 422)
          // For administrators only.
          expect(expectStatus(yield* summary(carol, march), 403)._tag).toBe("Forbidden")
          expect(expectStatus(yield* entries(carol, march), 403)._tag).toBe("Forbidden")

          // The entries of the window one page at a time, newest first, with their authors and comments.
          const seen: Array<any> = []
          let cursor: string | undefined
          let pages = 0
          do {
            const page = expectStatus(yield* entries(admin, { ...march, limit: 4, cursor }), 200)
            expect(page.items.length).toBeLessThanOrEqual(4)
            seen.push(...page.items)
            cursor = page.nextCursor ?? undefined
            pages++
          } while (cursor !== undefined && pages < 10)
          expect(pages).toBe(2)
          const inMarch = rated.filter(({ at }) => at >= march.from && at < march.to)
          expect(seen.map((entry) => entry.id)).toEqual(
            [...inMarch].sort((a, b) => b.at.localeCompare(a.at)).map(({ id }) => id)
          )
          const long = seen.find((entry) => entry.comment === "Long")
          expect(long).toMatchObject({
            userId: carol.id,
            username: carol.username,
            rating: "down",
            reasons: ["too_long"],
            modelId: alpha,
            modelName: "alpha-chat",
            updatedAt: "2021-03-11T00:00:00.000Z"
          })
          expect(typeof long.conversationId).toBe("string")
          expect(typeof long.messageId).toBe("string")

          // Filtered by model and rating.
          const alphaDowns = expectStatus(yield* entries(admin, { ...march, model: alpha, rating: "down" }), 200)
          expect(alphaDowns.items.map((entry: any) => entry.comment)).toEqual(["Long"])
          const betaByName = expectStatus(yield* entries(admin, { ...march, model: "beta-chat" }), 200)
          expect(betaByName.items).toHaveLength(3)
          expectStatus(yield* entries(admin, { rating: "meh" }), 422)
          expectStatus(yield* entries(admin, { cursor: "not-a-cursor" }), 422)
        }))
    })

    describe("the other ways in and out", () => {
      it.effect("RPC rates and lists as REST does", () =>
        Effect.gen(function*() {
          const { alice, alpha, bob } = yield* TheCast
          const { baseUrl } = yield* TestServer
          const answer = yield* ask(alice, alpha)
          const client = yield* overHttp(baseUrl)
          const given = yield* as(alice)(client.setFeedback({
            id: answer.conversationId as any,
            messageId: answer.id as any,
            feedback: { rating: "down", reasons: ["off_topic"], comment: "Over RPC" }
          }))
          expect(given).toMatchObject({ rating: "down", reasons: ["off_topic"], comment: "Over RPC", modelId: alpha })
          const listed = yield* as(alice)(client.listFeedback({ id: answer.conversationId as any }))
          expect(listed.items.map((item) => item.id)).toEqual([given.id])
          // The same as REST reads.
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([
            expect.objectContaining({ id: given.id, rating: "down", reasons: ["off_topic"], comment: "Over RPC" })
          ])
          const refused = yield* Effect.exit(as(bob)(client.listFeedback({ id: answer.conversationId as any })))
          expect(Exit.isFailure(refused) && JSON.stringify(refused.cause)).toContain("NotFound")
          yield* as(alice)(client.deleteFeedback({ id: answer.conversationId as any, messageId: answer.id as any }))
          expect(expectStatus(yield* ratingsOf(alice, answer.conversationId), 200).items).toEqual([])
        }).pipe(Effect.scoped))

      it.effect("the account's export holds the user's ratings", () =>
        Effect.gen(function*() {
          const { alpha } = yield* TheCast
          const erin = yield* signUp()
          const answer = yield* ask(erin, alpha)
          const rated = expectStatus(
            yield* rate(erin, answer, { rating: "up", reasons: ["unsafe", "accurate"], comment: "Exported" }),
            200
          )
          const exported = expectStatus(yield* call("GET", "/api/v1/me/export", { auth: erin.accessToken }), 200)
          expect(exported.feedback).toEqual([
            expect.objectContaining({
              id: rated.id,
              conversationId: answer.conversationId,
              messageId: answer.id,
              rating: "up",
              reasons: ["accurate", "unsafe"],
              comment: "Exported",
              modelId: alpha,
              modelName: "alpha-chat"
            })
          ])
        }))

      it.effect("purging the conversation, or erasing the account, removes the ratings", () =>
        Effect.gen(function*() {
          const { alpha } = yield* TheCast
          const frank = yield* signUp()
          const purged = yield* ask(frank, alpha)
          const kept = yield* ask(frank, alpha)
          expectStatus(yield* rate(frank, purged, { rating: "up", reasons: ["helpful"] }), 200)
          expectStatus(yield* rate(frank, kept, { rating: "down" }), 200)
          expectStatus(
            yield* call("DELETE", `/api/v1/conversations/${purged.conversationId}`, { auth: frank.accessToken }),
            204
          )
          expectStatus(
            yield* call("POST", `/api/v1/conversations/${purged.conversationId}/purge`, { auth: frank.accessToken }),
            204
          )
          expect(yield* storedRatings(purged.id)).toHaveLength(0)
          expect(yield* storedRatings(kept.id)).toHaveLength(1)
          const orphans = yield* inServerDatabase(Effect.flatMap(
            SqlClient.SqlClient,
            (sql) =>
              sql<{ readonly n: number | string }>`SELECT count(*) AS n FROM message_feedback_reasons r
                WHERE NOT EXISTS (SELECT 1 FROM message_feedback f WHERE f.id = r.feedback_id)`
          ))
          expect(Number(orphans[0]!.n)).toBe(0)

          expectStatus(
            yield* call("DELETE", "/api/v1/me", { auth: frank.accessToken, body: { password: frank.password } }),
            204
          )
          expect(yield* storedRatings(kept.id)).toHaveLength(0)
        }))
    })
  })
}

/**
 * Shares over real HTTP, on both dialects: a conversation or a complete analysis published as a
 * snapshot under a random link; read and reacted to without an account (views and reactions
 * counted, reactions limited per address); revoked; isolated between users; gone with the account.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { call, type Reply, signUp } from "./fixtures/Auth.js"
import { conversationWith, uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import { type FakeProvider, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { testServer } from "./fixtures/Server.js"

interface Cast {
  readonly openai: FakeProvider
  readonly modelId: string
}

class TheCast extends Context.Tag("test/Shares/Cast")<TheCast, Cast>() {}

/** Reactions per address and window: low enough to reach in a test. */
const reactionLimit = 8

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const openai = yield* fakeProvider("openai", [{ name: "gpt-shares" }])
      const { models } = yield* registerFake(admin, openai, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 })
      return { openai, modelId: models["gpt-shares"]! }
    })
  ).pipe(Layer.provideMerge(testServer({
    dialect,
    env: {
      SHARE_REACTIONS_PER_ADDRESS: String(reactionLimit),
      // Views are counted per address: the tests name theirs.
      TRUST_PROXY: "true",
      JOBS_POLL_INTERVAL: "50 millis",
      MODEL_STATUS_POLL_INTERVAL: "0 seconds"
    }
  })))

const expectStatus = (reply: Reply, status: number) => {
  expect(reply.status, JSON.stringify(reply.body)).toBe(status)
  return reply.body
}

/** A public request: no credential. */
const publicly = (method: "GET" | "POST", path: string, body?: unknown) =>
  call(method, path, body === undefined ? {} : { body })

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`shares on ${dialect}`, (it) => {
    describe("a shared conversation", () => {
      it.scoped("is a snapshot anyone with the link reads, counted once per address; the owner sees the counts", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const conversationId = yield* conversationWith(user, ["What is 2 + 2?", "4."])
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", { auth: user.accessToken, body: { conversationId } }),
            201
          )
          expect(share).toMatchObject({
            kind: "conversation",
            targetId: conversationId,
            title: "Notes",
            viewCount: 0,
            reactions: {},
            revokedAt: null
          })
          expect(share.slug).toMatch(/^[A-Za-z0-9_-]{22}$/)
          expect(share.path).toBe(`/api/v1/public/shares/${share.slug}`)

          // Written after sharing: not published.
          yield* call("POST", `/api/v1/conversations/${conversationId}/messages`, {
            auth: user.accessToken,
            body: { content: "A private follow-up" }
          })
          const seen = expectStatus(yield* publicly("GET", share.path), 200)
          expect(seen).toMatchObject({ title: "Notes", viewCount: 1, reactions: {} })
          expect(seen.content.kind).toBe("conversation")
          expect(
            seen.content.conversation.messages.map((
              message: { role: string; content: string }
            ) => [message.role, message.content])
          ).toEqual([["user", "What is 2 + 2?"], ["assistant", "4."]])
          expect(JSON.stringify(seen)).not.toContain(user.id)
          // Read again from the same address: not another view. From another: one more.
          expect(expectStatus(yield* publicly("GET", share.path), 200).viewCount).toBe(1)
          const elsewhere = yield* call("GET", share.path, { headers: { "x-forwarded-for": "203.0.113.7" } })
          expect(expectStatus(elsewhere, 200).viewCount).toBe(2)
          expect(expectStatus(yield* publicly("GET", share.path), 200).viewCount).toBe(2)

          const owned = expectStatus(yield* call("GET", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 200)
          expect(owned.viewCount).toBe(2)
          const listed = expectStatus(yield* call("GET", "/api/v1/shares", { auth: user.accessToken }), 200)
          expect(listed.items.map((item: { id: string }) => item.id)).toEqual([share.id])
        }))

      it.scoped("takes reactions without an account, limited per address; refuses unknown ones", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const conversationId = yield* conversationWith(user, ["Hello"])
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", { auth: user.accessToken, body: { conversationId, title: "Hi" } }),
            201
          )
          const react = (reaction: string) => publicly("POST", `${share.path}/reactions`, { reaction })
          expectStatus(yield* react("like"), 200)
          expectStatus(yield* react("like"), 200)
          expect(expectStatus(yield* react("love"), 200).reactions).toEqual({ like: 2, love: 1 })
          expect((yield* react("hate")).status).toBe(422)
          const owned = expectStatus(yield* call("GET", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 200)
          expect(owned.reactions).toEqual({ like: 2, love: 1 })
          expect(owned.title).toBe("Hi")
        }))

      it.scoped("revoking takes the link down; other users cannot see or revoke it; unknown links are 404", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const other = yield* signUp()
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", {
              auth: user.accessToken,
              body: { conversationId: yield* conversationWith(user, ["Soon gone"]) }
            }),
            201
          )
          expect((yield* call("GET", `/api/v1/shares/${share.id}`, { auth: other.accessToken })).status).toBe(404)
          expect((yield* call("DELETE", `/api/v1/shares/${share.id}`, { auth: other.accessToken })).status).toBe(404)
          expectStatus(yield* publicly("GET", share.path), 200)

          expect((yield* call("DELETE", `/api/v1/shares/${share.id}`, { auth: user.accessToken })).status).toBe(204)
          expect((yield* call("DELETE", `/api/v1/shares/${share.id}`, { auth: user.accessToken })).status).toBe(204)
          expect(expectStatus(yield* publicly("GET", share.path), 404)._tag).toBe("NotFound")
          expect((yield* publicly("POST", `${share.path}/reactions`, { reaction: "like" })).status).toBe(404)
          const owned = expectStatus(yield* call("GET", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 200)
          expect(owned.revokedAt).not.toBeNull()

          expect((yield* publicly("GET", "/api/v1/public/shares/AAAAAAAAAAAAAAAAAAAAAA")).status).toBe(404)
          expect((yield* publicly("GET", "/api/v1/public/shares/short")).status).toBe(422)
        }))

      it.scoped("another user's conversation, an empty one, or both kinds at once are refused; nothing is shared", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const other = yield* signUp()
          const theirs = yield* conversationWith(other, ["Theirs"])
          const empty = yield* conversationWith(user, [])
          const post = (body: unknown) => call("POST", "/api/v1/shares", { auth: user.accessToken, body })
          expect((yield* post({ conversationId: theirs })).status).toBe(404)
          expect((yield* post({ conversationId: empty })).status).toBe(422)
          expect((yield* post({})).status).toBe(422)
          expect((yield* call("POST", "/api/v1/shares", { body: { conversationId: empty } })).status).toBe(401)
          expect(expectStatus(yield* call("GET", "/api/v1/shares", { auth: user.accessToken }), 200).items).toEqual([])
        }))

      it.scoped("the personal-data export holds the shares as published", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", {
              auth: user.accessToken,
              body: { conversationId: yield* conversationWith(user, ["Exported"]) }
            }),
            201
          )
          const exported = expectStatus(yield* call("GET", "/api/v1/me/export", { auth: user.accessToken }), 200)
          expect(exported.shares).toEqual([
            expect.objectContaining({
              id: share.id,
              slug: share.slug,
              content: expect.objectContaining({ kind: "conversation" })
            })
          ])
        }))

      it.scoped("deleting the account takes its shares down", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", {
              auth: user.accessToken,
              body: { conversationId: yield* conversationWith(user, ["Mine"]) }
            }),
            201
          )
          expect(
            (yield* call("DELETE", "/api/v1/me", { auth: user.accessToken, body: { password: user.password } }))
              .status
          ).toBe(204)
          expect((yield* publicly("GET", share.path)).status).toBe(404)
        }))
    })

    describe("a shared analysis", () => {
      it.scoped("publishes a complete analysis with the file's name and type, not its text", () =>
        Effect.gen(function*() {
          const { modelId, openai } = yield* TheCast
          const user = yield* signUp()
          openai.chat = { text: [`{"summary": "A secret recipe, summarised."}`] }
          const file = yield* uploadOne(user.accessToken, "recipe.txt", "The secret ingredient is love.")
          const queued = expectStatus(
            yield* call("POST", `/api/v1/files/${file.id}/analyses`, { auth: user.accessToken, body: { modelId } }),
            202
          )
          const early = yield* call("POST", "/api/v1/shares", {
            auth: user.accessToken,
            body: { fileId: file.id, analysisId: queued.id }
          })
          expect(early.status === 201 || early.status === 422).toBe(true)
          let analysis = queued
          for (let i = 0; i < 300 && analysis.status !== "complete"; i++) {
            yield* Effect.sleep("50 millis")
            analysis = expectStatus(
              yield* call("GET", `/api/v1/files/${file.id}/analyses/${queued.id}`, { auth: user.accessToken }),
              200
            )
          }
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", {
              auth: user.accessToken,
              body: { fileId: file.id, analysisId: queued.id }
            }),
            201
          )
          expect(share).toMatchObject({ kind: "analysis", targetId: queued.id, title: "recipe.txt" })
          const seen = expectStatus(yield* publicly("GET", share.path), 200)
          expect(seen.content).toEqual({
            kind: "analysis",
            analysis: {
              fileName: "recipe.txt",
              contentType: "text/plain",
              analysis: { summary: "A secret recipe, summarised." },
              completedAt: expect.any(String)
            }
          })
          expect(JSON.stringify(seen)).not.toContain("secret ingredient")
          expect(
            (yield* call("POST", "/api/v1/shares", {
              auth: user.accessToken,
              body: { fileId: file.id }
            })).status
          ).toBe(422)
        }))
    })

    describe("limits", () => {
      // Last: it uses up this address's reactions for the window.
      it.scoped("reactions are limited per client address (SHARE_REACTIONS_PER_ADDRESS): 429 with Retry-After", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const share = expectStatus(
            yield* call("POST", "/api/v1/shares", {
              auth: user.accessToken,
              body: { conversationId: yield* conversationWith(user, ["React"]) }
            }),
            201
          )
          const react = () => publicly("POST", `${share.path}/reactions`, { reaction: "funny" })
          let accepted = 0
          let limited: Reply | undefined
          for (let i = 0; i <= reactionLimit && limited === undefined; i++) {
            const reply = yield* react()
            if (reply.status === 429) limited = reply
            else {
              expectStatus(reply, 200)
              accepted++
            }
          }
          expect(limited?.body._tag).toBe("RateLimited")
          expect(limited?.headers["retry-after"]).toMatch(/^\d+$/)
          const owned = expectStatus(yield* call("GET", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 200)
          expect(owned.reactions).toEqual({ funny: accepted })
          expect(accepted).toBeLessThan(reactionLimit)
        }))
    })
  })
}

/**
 * Shares over real HTTP, on both dialects: a conversation or a complete analysis published as a
 * snapshot under a random link; read and reacted to without an account (views and reactions
 * counted, reactions limited per address); described and tagged, changed and refreshed by their
 * owner, found by tag, text, kind and status, totalled; revoked; isolated between users; gone with
 * the account. The owner's operations over RPC too.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type { ConversationId } from "../src/Domain/Ids.js"
import { call, expectStatus, type Reply, signUp, type TestUser } from "./fixtures/Auth.js"
import { conversationWith, uploadOne } from "./fixtures/Content.js"
import { dialects } from "./fixtures/Database.js"
import { type FakeProvider, fakeProvider, registerFake } from "./fixtures/Providers.js"
import { as, failureTag, overHttp, overWebSocket } from "./fixtures/Rpc.js"
import { TestServer, testServer } from "./fixtures/Server.js"

interface Cast {
  readonly admin: TestUser
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
      return { admin, openai, modelId: models["gpt-shares"]! }
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

/** A public request: no credential. */
const publicly = (method: "GET" | "POST", path: string, body?: unknown) =>
  call(method, path, body === undefined ? {} : { body })

/** A public request from another client address (views and reactions are counted per address). */
const from = (address: string, method: "GET" | "POST", path: string, body?: unknown) =>
  call(method, path, { headers: { "x-forwarded-for": address }, ...(body === undefined ? {} : { body }) })

/** `user`'s share of a new conversation of theirs; `body` adds to the request. */
const shareOf = (user: TestUser, texts: ReadonlyArray<string>, body: Record<string, unknown> = {}) =>
  Effect.gen(function*() {
    const conversationId = yield* conversationWith(user, texts)
    const share = expectStatus(
      yield* call("POST", "/api/v1/shares", { auth: user.accessToken, body: { conversationId, ...body } }),
      201
    )
    return { ...share, conversationId }
  })

const patch = (user: TestUser, id: string, body: unknown) =>
  call("PATCH", `/api/v1/shares/${id}`, { auth: user.accessToken, body })

/** The ids of `user`'s shares the list gives for `params`, and its next cursor. */
const listed = (user: TestUser, params: Record<string, string>) =>
  Effect.map(
    call("GET", `/api/v1/shares?${new URLSearchParams(params)}`, { auth: user.accessToken }),
    (reply) => {
      const body = expectStatus(reply, 200)
      return { ids: body.items.map((item: { id: string }) => item.id), nextCursor: body.nextCursor as string | null }
    }
  )

/** The public view's messages, as role and text. */
const publishedMessages = (seen: any) =>
  seen.content.conversation.messages.map((message: { role: string; content: string }) => [
    message.role,
    message.content
  ])

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
              body: {
                conversationId: yield* conversationWith(user, ["Exported"]),
                description: "Mine to take",
                tags: ["export", "data"]
              }
            }),
            201
          )
          const exported = expectStatus(yield* call("GET", "/api/v1/me/export", { auth: user.accessToken }), 200)
          expect(exported.shares).toEqual([
            expect.objectContaining({
              id: share.id,
              slug: share.slug,
              description: "Mine to take",
              tags: ["data", "export"],
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

    describe("details, changes and finding them", () => {
      it.scoped("a description and tags, trimmed, lower-cased, folded and sorted, on the owner's and the public side", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const share = yield* shareOf(user, ["What is 2 + 2?", "4."], {
            description: "Arithmetic, shown step by step",
            tags: [" Math ", "math", "Basics", "q_and-a 2", "éTé"]
          })
          expect(share).toMatchObject({
            description: "Arithmetic, shown step by step",
            tags: ["basics", "math", "q_and-a 2", "été"],
            updatedAt: null
          })
          const owned = expectStatus(yield* call("GET", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 200)
          expect(owned).toMatchObject({ description: share.description, tags: share.tags, updatedAt: null })
          const seen = expectStatus(yield* publicly("GET", share.path), 200)
          expect(seen).toMatchObject({ description: share.description, tags: share.tags, updatedAt: null })

          // Without them: an empty description and no tags.
          const plain = yield* shareOf(user, ["Plain"])
          expect(plain).toMatchObject({ description: "", tags: [] })
          // Twenty-two given, twenty once folded: accepted.
          const folded = Array.from({ length: 20 }, (_, i) => `tag ${i}`)
          const many = yield* shareOf(user, ["Many"], { tags: [...folded, "TAG 0", " tag 1 "] })
          expect(many.tags).toHaveLength(20)
        }))

      it.scoped("bad tags or a description too long are 422 naming the field; nothing is stored", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const conversationId = yield* conversationWith(user, ["Hello"])
          const refusals = [
            { tags: Array.from({ length: 21 }, (_, i) => `tag${i}`) },
            { tags: ["x".repeat(41)] },
            { tags: ["no!bangs"] },
            { tags: ["   "] },
            { tags: "not-a-list" },
            { description: "d".repeat(2001) }
          ]
          for (const refused of refusals) {
            const reply = yield* call("POST", "/api/v1/shares", {
              auth: user.accessToken,
              body: { conversationId, ...refused }
            })
            const body = expectStatus(reply, 422)
            expect(body._tag).toBe("ValidationError")
            expect(typeof body.message).toBe("string")
            const field = Object.keys(refused)[0]
            expect(
              body.issues.some((issue: { path: Array<string> }) => issue.path.includes(field!)),
              JSON.stringify(body)
            )
              .toBe(true)
          }
          expect((yield* listed(user, {})).ids).toEqual([])

          // Nor does a refused change touch the share.
          const share = yield* shareOf(user, ["Kept"], { tags: ["kept"] })
          expectStatus(yield* patch(user, share.id, { title: "Changed", tags: ["fine", "not fine!"] }), 422)
          const owned = expectStatus(yield* call("GET", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 200)
          expect(owned).toMatchObject({ title: "Notes", tags: ["kept"], updatedAt: null })
        }))

      it.scoped("PATCH changes the title, the description and the whole set of tags; audited as share.updated", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const user = yield* signUp()
          const share = yield* shareOf(user, ["Hello"], { tags: ["first", "second"] })
          const changed = expectStatus(
            yield* patch(user, share.id, { title: "A new title", description: "Now described", tags: ["Third"] }),
            200
          )
          expect(changed).toMatchObject({
            id: share.id,
            slug: share.slug,
            title: "A new title",
            description: "Now described",
            tags: ["third"]
          })
          expect(changed.updatedAt).toEqual(expect.any(String))
          expect(expectStatus(yield* publicly("GET", share.path), 200)).toMatchObject({
            title: "A new title",
            description: "Now described",
            tags: ["third"],
            updatedAt: changed.updatedAt
          })
          // Nothing given: nothing changes (not even the time).
          expect(expectStatus(yield* patch(user, share.id, {}), 200)).toEqual({ ...changed, viewCount: 1 })
          // Only the tags: the others stay; an empty list clears them.
          expect(expectStatus(yield* patch(user, share.id, { tags: ["b", "a"] }), 200)).toMatchObject({
            title: "A new title",
            description: "Now described",
            tags: ["a", "b"]
          })
          expect(expectStatus(yield* patch(user, share.id, { tags: [] }), 200).tags).toEqual([])
          expect((yield* listed(user, { tag: "third" })).ids).toEqual([])

          const audited = expectStatus(
            yield* call(
              "GET",
              `/api/v1/admin/audit-events?${new URLSearchParams({ actorId: user.id, action: "share.updated" })}`,
              { auth: admin.accessToken }
            ),
            200
          )
          expect(audited.items).toHaveLength(3)
          expect(audited.items).toEqual(expect.arrayContaining([
            expect.objectContaining({
              action: "share.updated",
              actorId: user.id,
              targetType: "share",
              targetId: share.id,
              metadata: expect.objectContaining({ changed: ["title", "description", "tags"] })
            })
          ]))
          // The link is a secret: the trail does not hold it.
          expect(JSON.stringify(audited)).not.toContain(share.slug)
        }))

      it.scoped("refresh takes the snapshot again; without it the public view keeps the old one", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const share = yield* shareOf(user, ["What is 2 + 2?", "4."])
          expectStatus(
            yield* call("POST", `/api/v1/conversations/${share.conversationId}/messages`, {
              auth: user.accessToken,
              body: { content: "And 3 + 3?" }
            }),
            201
          )
          expectStatus(yield* patch(user, share.id, { title: "Sums" }), 200)
          expect(publishedMessages(expectStatus(yield* publicly("GET", share.path), 200))).toEqual([
            ["user", "What is 2 + 2?"],
            ["assistant", "4."]
          ])

          const refreshed = expectStatus(yield* patch(user, share.id, { refresh: true }), 200)
          expect(refreshed).toMatchObject({ title: "Sums", targetId: share.conversationId })
          const seen = expectStatus(yield* publicly("GET", share.path), 200)
          expect(publishedMessages(seen)).toEqual([
            ["user", "What is 2 + 2?"],
            ["assistant", "4."],
            ["user", "And 3 + 3?"]
          ])

          // Its conversation deleted: a refresh is 404, and nothing else given with it is written.
          expectStatus(
            yield* call("DELETE", `/api/v1/conversations/${share.conversationId}`, { auth: user.accessToken }),
            204
          )
          const gone = expectStatus(yield* patch(user, share.id, { refresh: true, title: "Lost" }), 404)
          expect(gone._tag).toBe("NotFound")
          const kept = expectStatus(yield* publicly("GET", share.path), 200)
          expect(kept.title).toBe("Sums")
          expect(publishedMessages(kept)).toHaveLength(3)
        }))

      it.scoped("a revoked share cannot be changed (409); another user's is not found (404)", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const other = yield* signUp()
          const share = yield* shareOf(user, ["Mine"])
          expect(expectStatus(yield* patch(other, share.id, { title: "Theirs" }), 404)._tag).toBe("NotFound")
          expect(expectStatus(yield* patch(other, share.id, {}), 404)._tag).toBe("NotFound")
          expectStatus(yield* call("DELETE", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 204)
          for (const body of [{ title: "Back?" }, { refresh: true }, {}]) {
            const refused = expectStatus(yield* patch(user, share.id, body), 409)
            expect(refused._tag).toBe("Conflict")
            expect(typeof refused.message).toBe("string")
          }
          const owned = expectStatus(yield* call("GET", `/api/v1/shares/${share.id}`, { auth: user.accessToken }), 200)
          expect(owned).toMatchObject({ title: "Notes", updatedAt: null })
          expect((yield* call("PATCH", `/api/v1/shares/${share.id}`, { body: {} })).status).toBe(401)
        }))

      it.scoped("the list filters by tag, text (wildcards taken literally), kind and status, page by page", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const other = yield* signUp()
          const sure = yield* shareOf(user, ["A"], { title: "100% sure", tags: ["alpha"] })
          const percent = yield* shareOf(user, ["B"], {
            title: "A hundred percent",
            description: "Nothing special: 1000 of them",
            tags: ["alpha", "beta"]
          })
          const described = yield* shareOf(user, ["C"], { title: "Other", description: "Said to be 100% SURE" })
          const lastAlpha = yield* shareOf(user, ["D"], { title: "under_score", tags: ["Alpha"] })
          yield* shareOf(other, ["E"], { title: "100% theirs", tags: ["alpha"] })

          expect((yield* listed(user, { q: "100%" })).ids).toEqual([described.id, sure.id])
          expect((yield* listed(user, { q: "sure" })).ids).toEqual([described.id, sure.id])
          expect((yield* listed(user, { q: "1_0" })).ids).toEqual([])
          expect((yield* listed(user, { q: "r_s" })).ids).toEqual([lastAlpha.id])
          expect((yield* listed(user, { q: "%" })).ids).toEqual([described.id, sure.id])
          expect((yield* listed(user, { tag: "alpha" })).ids).toEqual([lastAlpha.id, percent.id, sure.id])
          expect((yield* listed(user, { tag: " BETA " })).ids).toEqual([percent.id])
          expect((yield* listed(user, { tag: "gamma" })).ids).toEqual([])
          expect((yield* listed(user, { kind: "analysis" })).ids).toEqual([])
          expect((yield* listed(user, { kind: "conversation" })).ids).toHaveLength(4)
          expect((yield* listed(user, { tag: "alpha", q: "percent" })).ids).toEqual([percent.id])

          expectStatus(yield* call("DELETE", `/api/v1/shares/${percent.id}`, { auth: user.accessToken }), 204)
          expect((yield* listed(user, { status: "revoked" })).ids).toEqual([percent.id])
          expect((yield* listed(user, { status: "active" })).ids).toEqual([lastAlpha.id, described.id, sure.id])
          expect((yield* listed(user, {})).ids).toHaveLength(4)

          // A filtered list, page by page: the cursor keeps to the filter.
          const first = yield* listed(user, { tag: "alpha", limit: "2" })
          expect(first.ids).toEqual([lastAlpha.id, percent.id])
          expect(first.nextCursor).not.toBeNull()
          const second = yield* listed(user, { tag: "alpha", limit: "2", cursor: first.nextCursor! })
          expect(second).toEqual({ ids: [sure.id], nextCursor: null })

          for (const params of [{ kind: "video" }, { status: "gone" }, { tag: "no!" }]) {
            const reply = yield* call("GET", `/api/v1/shares?${new URLSearchParams(params)}`, {
              auth: user.accessToken
            })
            expect(expectStatus(reply, 422)._tag).toBe("ValidationError")
          }
        }))

      it.scoped("stats total the shares, the revoked ones, their views and reactions", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const stats = () =>
            Effect.map(
              call("GET", "/api/v1/shares/stats", { auth: user.accessToken }),
              (reply) => expectStatus(reply, 200)
            )
          expect(yield* stats()).toEqual({
            shares: 0,
            active: 0,
            revoked: 0,
            views: 0,
            reactions: { like: 0, love: 0, insightful: 0, funny: 0 }
          })
          const kept = yield* shareOf(user, ["Kept"])
          const dropped = yield* shareOf(user, ["Dropped"])
          // Other users' shares are not counted.
          const theirs = yield* shareOf(yield* signUp(), ["Theirs"])
          expectStatus(yield* from("198.51.100.1", "GET", theirs.path), 200)

          expectStatus(yield* from("198.51.100.1", "GET", kept.path), 200)
          expectStatus(yield* from("198.51.100.2", "GET", kept.path), 200)
          expectStatus(yield* from("198.51.100.1", "GET", dropped.path), 200)
          expectStatus(yield* from("198.51.100.1", "POST", `${kept.path}/reactions`, { reaction: "like" }), 200)
          expectStatus(yield* from("198.51.100.2", "POST", `${kept.path}/reactions`, { reaction: "like" }), 200)
          expectStatus(
            yield* from("198.51.100.1", "POST", `${dropped.path}/reactions`, { reaction: "insightful" }),
            200
          )
          expectStatus(yield* call("DELETE", `/api/v1/shares/${dropped.id}`, { auth: user.accessToken }), 204)

          expect(yield* stats()).toEqual({
            shares: 2,
            active: 1,
            revoked: 1,
            views: 3,
            reactions: { like: 2, love: 0, insightful: 1, funny: 0 }
          })
          expect((yield* call("GET", "/api/v1/shares/stats")).status).toBe(401)
        }))

      it.scoped("over RPC: tags, updates, filters and stats; a revoked share is Conflict, another's NotFound", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const user = yield* signUp()
          const other = yield* signUp()
          for (
            const [transport, client] of [
              ["http", yield* overHttp(baseUrl)],
              ["websocket", yield* overWebSocket(baseUrl)]
            ] as const
          ) {
            const conversationId = (yield* conversationWith(user, [`Over ${transport}`])) as ConversationId
            const share = yield* as(user)(client.createShare({ conversationId, tags: [transport, "RPC "] }))
            expect(share.tags, transport).toEqual([transport, "rpc"].sort())
            const updated = yield* as(user)(
              client.updateShare({ id: share.id, changes: { description: `Sent over ${transport}`, tags: ["rpc"] } })
            )
            expect(updated, transport).toMatchObject({ description: `Sent over ${transport}`, tags: ["rpc"] })
            expect(updated.updatedAt, transport).not.toBeNull()
            const found = yield* as(user)(client.listShares({ tag: "rpc", q: transport, status: "active" }))
            expect(found.items.map((item) => item.id), transport).toEqual([share.id])
            expect(
              failureTag(yield* Effect.exit(as(other)(client.updateShare({ id: share.id, changes: {} })))),
              transport
            ).toBe("NotFound")
            yield* as(user)(client.revokeShare({ id: share.id }))
            expect(
              failureTag(yield* Effect.exit(as(user)(client.updateShare({ id: share.id, changes: { title: "x" } })))),
              transport
            ).toBe("Conflict")
          }
          const client = yield* overHttp(baseUrl)
          expect(yield* as(user)(client.shareStats())).toMatchObject({
            shares: 2,
            active: 0,
            revoked: 2
          })
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

          // Refreshed: the analysis taken again; once the file is deleted, there is nothing to take.
          const refreshed = expectStatus(yield* patch(user, share.id, { refresh: true, tags: ["recipes"] }), 200)
          expect(refreshed).toMatchObject({ kind: "analysis", targetId: queued.id, tags: ["recipes"] })
          expect(expectStatus(yield* publicly("GET", share.path), 200).content).toEqual(seen.content)
          expectStatus(yield* call("DELETE", `/api/v1/files/${file.id}`, { auth: user.accessToken }), 204)
          expect(expectStatus(yield* patch(user, share.id, { refresh: true }), 404)._tag).toBe("NotFound")
          expect(expectStatus(yield* publicly("GET", share.path), 200).content).toEqual(seen.content)
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

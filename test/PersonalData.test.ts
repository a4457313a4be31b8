/**
 * Each user's own personal data: the export of everything stored about them,
 * marketing consent, and the erasure of their account.
 */
import { HttpClientRequest } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { generateUuid } from "../src/Domain/Ids.js"
import { call, createKey, expectStatus, signIn, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { inServerDatabase, TestServer, testServer } from "./fixtures/Server.js"

/** The first user of the server: its only admin. */
class Admin extends Context.Tag("test/PersonalData/Admin")<Admin, TestUser>() {}

const inDatabase = inServerDatabase

/** A conversation of `userId` with a question and its answer, written straight into the database. */
const seedConversation = (userId: string, title: string) =>
  inDatabase(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const conversationId = yield* generateUuid
    const questionId = yield* generateUuid
    const answerId = yield* generateUuid
    yield* sql`INSERT INTO conversations ${sql.insert({ id: conversationId, userId, title })}`
    yield* sql`INSERT INTO messages ${
      sql.insert({ id: questionId, conversationId, role: "user", content: `${title}: a question` })
    }`
    yield* sql`INSERT INTO messages ${
      sql.insert({
        id: answerId,
        conversationId,
        parentId: questionId,
        role: "assistant",
        content: `${title}: an answer`
      })
    }`
    // The tokens the answer spent, as the chat engine records them.
    yield* sql`INSERT INTO usage_records ${
      sql.insert({
        id: yield* generateUuid,
        userId,
        modelName: "loop-model",
        source: "chat",
        promptTokens: 12,
        completionTokens: 3,
        createdAt: new Date().toISOString()
      })
    }`
    return { conversationId, messageIds: [questionId, answerId] }
  }))

/** How many rows of each kind the database holds for `userId`. */
const storedRows = (userId: string) =>
  inDatabase(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const count = (rows: Effect.Effect<ReadonlyArray<{ readonly count: unknown }>, unknown>) =>
      Effect.map(rows, ([row]) => Number(row?.count))
    return yield* Effect.all({
      users: count(sql`SELECT count(*) AS count FROM users WHERE id = ${userId}`),
      sessions: count(sql`SELECT count(*) AS count FROM sessions WHERE user_id = ${userId}`),
      apiKeys: count(sql`SELECT count(*) AS count FROM api_keys WHERE user_id = ${userId}`),
      conversations: count(sql`SELECT count(*) AS count FROM conversations WHERE user_id = ${userId}`),
      messages: count(sql`SELECT count(*) AS count FROM messages JOIN conversations
                          ON conversations.id = messages.conversation_id WHERE conversations.user_id = ${userId}`)
    })
  }))

/** The export, as the raw text the server sent and as JSON. */
const exportOf = (user: TestUser) =>
  Effect.gen(function*() {
    const { client } = yield* TestServer
    const response = yield* client.execute(
      HttpClientRequest.get("/api/v1/me/export").pipe(HttpClientRequest.bearerToken(user.accessToken))
    )
    const text = yield* response.text
    expect(response.status, text).toBe(200)
    return { text, body: JSON.parse(text) }
  }).pipe(Effect.scoped, Effect.orDie)

const auditEvents = (admin: TestUser, params: Record<string, string>) =>
  Effect.map(
    call("GET", `/api/v1/admin/audit-events?${new URLSearchParams({ limit: "100", ...params })}`, {
      auth: admin.accessToken
    }),
    (reply) => expectStatus(reply, 200).items as Array<any>
  )

const me = (credential: string) => call("GET", "/api/v1/auth/me", { auth: credential })

const deleteAccount = (user: TestUser, password: string) =>
  call("DELETE", "/api/v1/me", { auth: user.accessToken, body: { password } })

for (const dialect of dialects) {
  layer(Layer.effect(Admin, signUp()).pipe(Layer.provideMerge(testServer({ dialect }))), {
    excludeTestServices: true
  })(`personal data on ${dialect}`, (it) => {
    describe("export", () => {
      it.effect("holds the user, consent, sessions, keys and conversations, and never a secret", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          yield* signIn(user.email, user.password)
          const key = yield* createKey(user, ["models:read"])
          const mine = yield* seedConversation(user.id, "Mine")
          const stranger = yield* signUp()
          const theirs = yield* seedConversation(stranger.id, "Theirs")

          const { body, text } = yield* exportOf(user)
          expect(body.user).toMatchObject({ id: user.id, email: user.email, username: user.username, role: "user" })
          expect(body.consent).toEqual({
            termsAcceptedAt: expect.any(String),
            marketingConsent: false,
            marketingConsentAt: null
          })
          expect(body.sessions).toHaveLength(2)
          for (const session of body.sessions) {
            expect(session).toMatchObject({ createdAt: expect.any(String), revokedAt: null })
          }
          expect(body.apiKeys).toEqual([
            expect.objectContaining({ id: key.id, scopes: ["models:read"], revokedAt: null })
          ])
          expect(body.conversations).toEqual([
            expect.objectContaining({
              id: mine.conversationId,
              deletedAt: null,
              format: "webplus.conversation",
              conversation: expect.objectContaining({ title: "Mine", pinned: false }),
              messages: expect.arrayContaining([
                expect.objectContaining({ id: mine.messageIds[0], role: "user", content: "Mine: a question" }),
                expect.objectContaining({ id: mine.messageIds[1], role: "assistant", content: "Mine: an answer" })
              ])
            })
          ])
          expect(body.conversations[0].messages).toHaveLength(2)
          expect(body.usage).toEqual([
            expect.objectContaining({ source: "chat", modelName: "loop-model", promptTokens: 12, completionTokens: 3 })
          ])
          expect(text).not.toContain(theirs.conversationId)
          expect(body.auditEvents.map((event: { action: string }) => event.action)).toEqual(
            expect.arrayContaining(["user.registered", "auth.login.succeeded", "api-key.created"])
          )

          // Secrets and their hashes stay on the server.
          for (const secret of [key.secret, user.accessToken, user.refreshToken, user.password]) {
            expect(text).not.toContain(secret)
          }
          expect(text).not.toMatch(/"wp_[A-Za-z0-9_-]{20,}/)
          for (const leak of ["scrypt$", "keyHash", "tokenHash", "passwordHash", "key_hash", "token_hash"]) {
            expect(text).not.toContain(leak)
          }
        }))

      it.effect("is recorded in the audit trail", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const user = yield* signUp()
          yield* exportOf(user)
          const events = yield* auditEvents(admin, { action: "user.exported", actorId: user.id })
          expect(events).toEqual([
            expect.objectContaining({
              action: "user.exported",
              actorId: user.id,
              targetType: "user",
              targetId: user.id
            })
          ])
        }))
    })

    describe("consent", () => {
      it.effect("marketing consent is off by default, given with a time, and withdrawn", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const initial = expectStatus(yield* call("GET", "/api/v1/me/consent", { auth: user.accessToken }), 200)
          expect(initial).toEqual({
            termsAcceptedAt: expect.any(String),
            marketingConsent: false,
            marketingConsentAt: null
          })

          const before = Date.now()
          const given = expectStatus(
            yield* call("PUT", "/api/v1/me/consent", { auth: user.accessToken, body: { marketingConsent: true } }),
            200
          )
          expect(given).toMatchObject({ termsAcceptedAt: initial.termsAcceptedAt, marketingConsent: true })
          const at = Date.parse(given.marketingConsentAt)
          expect(at).toBeGreaterThanOrEqual(before - 1000)
          expect(at).toBeLessThanOrEqual(Date.now() + 1000)
          expect(expectStatus(yield* call("GET", "/api/v1/me/consent", { auth: user.accessToken }), 200)).toEqual(given)

          const withdrawn = expectStatus(
            yield* call("PUT", "/api/v1/me/consent", { auth: user.accessToken, body: { marketingConsent: false } }),
            200
          )
          expect(withdrawn).toEqual({ ...initial, marketingConsent: false, marketingConsentAt: null })
          expect(expectStatus(yield* call("GET", "/api/v1/me/consent", { auth: user.accessToken }), 200)).toEqual(
            withdrawn
          )
        }))
    })

    describe("erasure", () => {
      /** A user with a key and a conversation. */
      const userWithData = Effect.gen(function*() {
        const user = yield* signUp()
        const key = yield* createKey(user, ["models:read"])
        yield* seedConversation(user.id, "To be forgotten")
        return { user, key }
      })

      it.effect("a wrong password is refused (403) and changes nothing", () =>
        Effect.gen(function*() {
          const { key, user } = yield* userWithData
          const before = yield* storedRows(user.id)
          expect(before).toEqual({ users: 1, sessions: 1, apiKeys: 1, conversations: 1, messages: 2 })
          const reply = yield* deleteAccount(user, "not the password")
          expect(reply).toMatchObject({ status: 403, body: { _tag: "Forbidden" } })
          expect(yield* storedRows(user.id)).toEqual(before)
          expectStatus(yield* me(user.accessToken), 200)
          expectStatus(yield* me(key.secret), 200)
        }))

      it.effect("the right password erases the account and everything in it; the audit trail stays, pseudonymous", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const { key, user } = yield* userWithData
          expectStatus(yield* deleteAccount(user, user.password), 204)

          expect((yield* me(user.accessToken)).status).toBe(401)
          expect((yield* me(key.secret)).status).toBe(401)
          const login = yield* call("POST", "/api/v1/auth/login", {
            body: { login: user.email, password: user.password }
          })
          expect(login.status).toBe(401)
          const refresh = yield* call("POST", "/api/v1/auth/refresh", { body: { refreshToken: user.refreshToken } })
          expect(refresh.status).toBe(401)
          expect(yield* storedRows(user.id)).toEqual({
            users: 0,
            sessions: 0,
            apiKeys: 0,
            conversations: 0,
            messages: 0
          })

          const events = [
            ...(yield* auditEvents(admin, { actorId: user.id })),
            ...(yield* auditEvents(admin, { targetId: user.id }))
          ]
          expect(events.map((event) => event.action)).toEqual(
            expect.arrayContaining(["user.registered", "auth.login.succeeded", "api-key.created"])
          )
          for (const event of events) {
            const { ipAddress, metadata, userAgent } = event
            expect({ ipAddress, userAgent, metadata }, event.action).toEqual({
              ipAddress: null,
              userAgent: null,
              metadata: {}
            })
          }
        }))

      it.effect("the last admin cannot erase themselves (409)", () =>
        Effect.gen(function*() {
          const admin = yield* Admin
          const reply = yield* deleteAccount(admin, admin.password)
          expect(reply).toMatchObject({ status: 409, body: { _tag: "Conflict" } })
          expect(expectStatus(yield* me(admin.accessToken), 200)).toMatchObject({ id: admin.id, role: "admin" })
        }))
    })
  })
}

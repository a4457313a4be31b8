/**
 * The RPC interface against the running server, with a real `RpcClient`
 * over HTTP (`POST /rpc`, NDJSON) and over WebSocket (`GET /rpc`, JSON), on both
 * dialects: accounts, conversations, models, and chat as a stream (in order,
 * ending with the stored answer), cancelled from the client, regenerated,
 * continued and resumed; typed failures and isolation between users. Every
 * operation of `WebPlusRpcs` runs over both transports; administration as the
 * first account (the administrator).
 */
import { RpcClient } from "@effect/rpc"
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Cause, Context, DateTime, Effect, type Exit, Fiber, Layer, Redacted, Stream } from "effect"
import * as Crypto from "node:crypto"
import type { ChatEvent } from "../src/Chat/Api.js"
import type { LlmModelId, ProviderId } from "../src/Domain/Ids.js"
import { Email, Username } from "../src/Domain/User.js"
import { call, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { exportFile } from "./fixtures/Documents.js"
import { capturedLogs } from "./fixtures/Logs.js"
import { collect, spawnScript } from "./fixtures/Process.js"
import { fakeProvider } from "./fixtures/Providers.js"
import { as, defectMessage, failureTag, overHttp, overWebSocket, type RpcTestClient } from "./fixtures/Rpc.js"
import { inServerDatabase, startTestServer, TestServer, testServer } from "./fixtures/Server.js"

type Client = RpcTestClient

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
  readonly other: TestUser
  readonly clients: ReadonlyArray<readonly [string, Client]>
}

class TheCast extends Context.Tag("test/Rpc/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const { baseUrl } = yield* TestServer
      // The first account is the administrator.
      const admin = yield* signUp()
      const [user, other] = yield* Effect.all([signUp(), signUp()])
      const clients = [["http", yield* overHttp(baseUrl)], ["websocket", yield* overWebSocket(baseUrl)]] as const
      return { admin, user, other, clients }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } })))

/** Runs `effect` with `user`'s access token on every call it makes. */
/** A name no other test (transport, dialect or run) uses. */
const uniqueName = (prefix: string) => `${prefix}_${Crypto.randomBytes(4).toString("hex")}`

/** A chat answer's events, read to the end with `user`'s access token. */
const eventsOf = <E, R>(user: TestUser, stream: Stream.Stream<ChatEvent, E, R>) =>
  Effect.map(as(user)(Stream.runCollect(stream)), (events) => [...events])

const startOf = (events: ReadonlyArray<ChatEvent>) => events[0] as Extract<ChatEvent, { _tag: "start" }>
const doneOf = (events: ReadonlyArray<ChatEvent>) => events.at(-1) as Extract<ChatEvent, { _tag: "done" }>

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`rpc on ${dialect}`, (it) => {
    describe("accounts", () => {
      it.effect("a session opened over RPC records the client's address, as one opened over REST does", () =>
        Effect.gen(function*() {
          const { clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const tokens = yield* client.login({ login: user.email, password: Redacted.make(user.password) })
            const exported = yield* call("GET", "/api/v1/me/export", { auth: Redacted.value(tokens.accessToken) })
            const addresses = (exported.body.sessions as Array<{ ipAddress: string | null }>).map((s) => s.ipAddress)
            expect(addresses.length, transport).toBeGreaterThan(0)
            expect(addresses.every((address) => address !== null && address.includes("127.0.0.1")), transport)
              .toBe(true)
          }
        }))

      it.effect("login, me and API keys; no credential is Unauthorized, over HTTP and WebSocket", () =>
        Effect.gen(function*() {
          const { clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const tokens = yield* client.login({ login: user.email, password: Redacted.make(user.password) })
            const me = yield* RpcClient.withHeaders(client.me(), {
              authorization: `Bearer ${Redacted.value(tokens.accessToken)}`
            })
            expect(me.id, transport).toBe(user.id)
            expect(failureTag(yield* Effect.exit(client.me())), transport).toBe("Unauthorized")
            const wrong = yield* Effect.exit(client.login({ login: user.email, password: Redacted.make("wrong pass") }))
            expect(failureTag(wrong), transport).toBe("Unauthorized")

            const created = yield* as(user)(client.createApiKey({ name: `rpc ${transport}`, scopes: ["chat"] }))
            const listed = yield* as(user)(client.listApiKeys())
            expect(listed.items.map((key) => key.id), transport).toContain(created.apiKey.id)
            // The key is a credential too.
            const viaKey = yield* RpcClient.withHeaders(client.me(), { "x-api-key": Redacted.value(created.secret) })
            expect(viaKey.id, transport).toBe(user.id)
            yield* as(user)(client.revokeApiKey({ id: created.apiKey.id }))
            const revoked = yield* Effect.exit(
              RpcClient.withHeaders(client.me(), { "x-api-key": Redacted.value(created.secret) })
            )
            expect(failureTag(revoked), transport).toBe("Unauthorized")
          }
        }))

      it.effect("register, refresh and logout; a taken name is Conflict, a spent refresh token Unauthorized", () =>
        Effect.gen(function*() {
          const { clients } = yield* TheCast
          for (const [transport, client] of clients) {
            const name = uniqueName(`rpc_${transport}`)
            const password = `pass-${name}-phrase`
            const account = {
              email: Email.make(`${name}@example.com`),
              username: Username.make(name),
              password: Redacted.make(password),
              acceptTerms: true as const
            }
            const registered = yield* client.register(account)
            expect(registered, transport).toMatchObject({ username: name, email: `${name}@example.com`, role: "user" })
            expect(failureTag(yield* Effect.exit(client.register(account))), transport).toBe("Conflict")
            // The password policy refuses a password that is the username.
            const weakName = uniqueName(`weak_${transport}`)
            const weak = yield* Effect.exit(client.register({
              email: Email.make(`${weakName}@example.com`),
              username: Username.make(weakName),
              password: Redacted.make(weakName),
              acceptTerms: true
            }))
            expect(failureTag(weak), transport).toBe("ValidationError")

            const first = yield* client.login({ login: name, password: Redacted.make(password) })
            const second = yield* client.refresh({ refreshToken: first.refreshToken })
            expect(Redacted.value(second.accessToken)).not.toBe(Redacted.value(first.accessToken))
            const bearer = { authorization: `Bearer ${Redacted.value(second.accessToken)}` }
            expect((yield* RpcClient.withHeaders(client.me(), bearer)).id, transport).toBe(registered.id)

            yield* RpcClient.withHeaders(client.logout(), bearer)
            expect(failureTag(yield* Effect.exit(RpcClient.withHeaders(client.me(), bearer))), transport).toBe(
              "Unauthorized"
            )
            const afterLogout = yield* Effect.exit(client.refresh({ refreshToken: second.refreshToken }))
            expect(failureTag(afterLogout), transport).toBe("Unauthorized")
            const spent = yield* Effect.exit(client.refresh({ refreshToken: first.refreshToken }))
            expect(failureTag(spent), transport).toBe("Unauthorized")
            expect(failureTag(yield* Effect.exit(client.logout())), transport).toBe("Unauthorized")
          }
        }))

      it.effect("changePassword: a wrong current password is Forbidden; the new one signs in, the old one not", () =>
        Effect.gen(function*() {
          const { clients } = yield* TheCast
          for (const [transport, client] of clients) {
            const account = yield* signUp()
            const newPassword = `new-${uniqueName(transport)}-phrase`
            const wrong = yield* Effect.exit(
              as(account)(client.changePassword({
                currentPassword: Redacted.make(`${account.password}-not`),
                newPassword: Redacted.make(newPassword)
              }))
            )
            expect(failureTag(wrong), transport).toBe("Forbidden")
            yield* as(account)(client.changePassword({
              currentPassword: Redacted.make(account.password),
              newPassword: Redacted.make(newPassword)
            }))
            const old = yield* Effect.exit(
              client.login({ login: account.email, password: Redacted.make(account.password) })
            )
            expect(failureTag(old), transport).toBe("Unauthorized")
            yield* client.login({ login: account.email, password: Redacted.make(newPassword) })
            // The session that changed it goes on.
            expect((yield* as(account)(client.me())).id, transport).toBe(account.id)
            const anonymous = yield* Effect.exit(client.changePassword({
              currentPassword: Redacted.make(newPassword),
              newPassword: Redacted.make(`${newPassword}-again`)
            }))
            expect(failureTag(anonymous), transport).toBe("Unauthorized")
          }
        }))
    })

    describe("conversations", () => {
      it.effect("create, rename, append, read the branch, search, trash; another user's is NotFound", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const created = yield* as(user)(client.createConversation({ title: `rpc ${transport}` }))
            const renamed = yield* as(user)(
              client.updateConversation({ id: created.id, changes: { title: `renamed over ${transport}` } })
            )
            expect(renamed.title).toBe(`renamed over ${transport}`)
            const first = yield* as(user)(
              client.appendMessage({ id: created.id, message: { role: "user", content: `quixotic ${transport}` } })
            )
            const second = yield* as(user)(
              client.appendMessage({ id: created.id, message: { role: "assistant", content: "an answer" } })
            )
            const branch = yield* as(user)(client.listMessages({ id: created.id, query: { view: "active" } }))
            expect(branch.items.map((message) => message.id)).toEqual([first.id, second.id])
            const found = yield* as(user)(client.search({ q: `quixotic ${transport}` }))
            expect(found.items.some((hit) => hit.conversationId === created.id), transport).toBe(true)

            const foreign = yield* Effect.exit(as(other)(client.getConversation({ id: created.id })))
            expect(failureTag(foreign), transport).toBe("NotFound")
            const foreignWrite = yield* Effect.exit(
              as(other)(client.appendMessage({ id: created.id, message: { role: "user", content: "mine now" } }))
            )
            expect(failureTag(foreignWrite), transport).toBe("NotFound")

            yield* as(user)(client.deleteConversation({ id: created.id }))
            const listed = yield* as(user)(client.listConversations({}))
            expect(listed.items.map((conversation) => conversation.id)).not.toContain(created.id)
            const restored = yield* as(user)(client.restoreConversation({ id: created.id }))
            expect(restored.id).toBe(created.id)
          }
        }))

      it.effect("a refused change is a typed error, and nothing is written", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const mine = yield* as(user)(client.createConversation({}))
            const theirs = yield* as(other)(client.createConversation({}))
            const foreignMessage = yield* as(other)(
              client.appendMessage({ id: theirs.id, message: { role: "user", content: "theirs" } })
            )
            // A message of another conversation cannot become this one's leaf.
            const leaf = yield* Effect.exit(
              as(user)(client.setCurrentLeaf({ id: mine.id, leaf: { messageId: foreignMessage.id, descend: false } }))
            )
            expect(["ValidationError", "NotFound"], transport).toContain(failureTag(leaf))
            const after = yield* as(user)(client.getConversation({ id: mine.id }))
            expect(after.messageCount).toBe(0)
            expect(after.currentLeafId).toBeNull()
          }
        }))

      it.effect("edit and delete messages, purge; another user's or a deleted message is NotFound", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const { id } = yield* as(user)(client.createConversation({ title: `tree over ${transport}` }))
            const question = yield* as(user)(
              client.appendMessage({ id, message: { role: "user", content: "the first version" } })
            )
            const answer = yield* as(user)(
              client.appendMessage({ id, message: { role: "assistant", content: "an answer" } })
            )
            const edited = yield* as(user)(
              client.editMessage({ id, messageId: question.id, edit: { content: "the second version" } })
            )
            expect(edited, transport).toMatchObject({
              content: "the second version",
              editedFromId: question.id,
              parentId: question.parentId,
              siblingCount: 2
            })
            const branch = yield* as(user)(client.listMessages({ id, query: { view: "active" } }))
            expect(branch.items.map((message) => message.id), transport).toEqual([edited.id])
            const foreignEdit = yield* Effect.exit(
              as(other)(client.editMessage({ id, messageId: question.id, edit: { content: "mine now" } }))
            )
            expect(failureTag(foreignEdit), transport).toBe("NotFound")

            // Deleting the edit brings the original branch back.
            yield* as(user)(client.deleteMessage({ id, messageId: edited.id }))
            const back = yield* as(user)(client.listMessages({ id, query: { view: "active" } }))
            expect(back.items.map((message) => message.id), transport).toEqual([question.id, answer.id])
            const gone = yield* Effect.exit(as(user)(client.getMessage({ id, messageId: edited.id })))
            expect(failureTag(gone), transport).toBe("NotFound")
            const again = yield* Effect.exit(as(user)(client.deleteMessage({ id, messageId: edited.id })))
            expect(failureTag(again), transport).toBe("NotFound")
            const foreignDelete = yield* Effect.exit(as(other)(client.deleteMessage({ id, messageId: answer.id })))
            expect(failureTag(foreignDelete), transport).toBe("NotFound")

            const foreignPurge = yield* Effect.exit(as(other)(client.purgeConversation({ id })))
            expect(failureTag(foreignPurge), transport).toBe("NotFound")
            expect((yield* as(user)(client.getConversation({ id }))).messageCount, transport).toBe(2)
            yield* as(user)(client.purgeConversation({ id }))
            expect(failureTag(yield* Effect.exit(as(user)(client.getConversation({ id })))), transport).toBe("NotFound")
            expect(failureTag(yield* Effect.exit(as(user)(client.restoreConversation({ id })))), transport).toBe(
              "NotFound"
            )
          }
        }))

      it.effect("threads: create, append, list, rename, delete; another user's is NotFound", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const { id } = yield* as(user)(client.createConversation({ title: `threads over ${transport}` }))
            const anchor = yield* as(user)(
              client.appendMessage({ id, message: { role: "user", content: "something to discuss" } })
            )
            const thread = yield* as(user)(
              client.createThread({ id, thread: { messageId: anchor.id, title: `aside over ${transport}` } })
            )
            expect(thread, transport).toMatchObject({
              conversationId: id,
              anchorMessageId: anchor.id,
              title: `aside over ${transport}`,
              messageCount: 0
            })
            const reply = yield* as(user)(
              client.appendThreadMessage({ id, threadId: thread.id, message: { role: "user", content: "an aside" } })
            )
            expect(reply.threadId, transport).toBe(thread.id)
            const inThread = yield* as(user)(client.listThreadMessages({ id, threadId: thread.id, page: {} }))
            expect(inThread.items.map((message) => message.id), transport).toEqual([reply.id])
            // The thread's messages stay out of the conversation's branch.
            const branch = yield* as(user)(client.listMessages({ id, query: { view: "active" } }))
            expect(branch.items.map((message) => message.id), transport).toEqual([anchor.id])
            const renamed = yield* as(user)(
              client.updateThread({ id, threadId: thread.id, changes: { title: `renamed over ${transport}` } })
            )
            expect(renamed.title, transport).toBe(`renamed over ${transport}`)
            const threads = yield* as(user)(client.listThreads({ id, page: {} }))
            expect(threads.items.map(({ id, messageCount, title }) => ({ id, messageCount, title })), transport)
              .toEqual([
                { id: thread.id, messageCount: 1, title: `renamed over ${transport}` }
              ])

            // A thread needs a message of this conversation's tree.
            const dangling = yield* Effect.exit(
              as(user)(client.createThread({ id, thread: { messageId: reply.id } }))
            )
            expect(failureTag(dangling), transport).toBe("ValidationError")
            for (
              const foreign of [
                as(other)(client.listThreads({ id, page: {} })),
                as(other)(client.listThreadMessages({ id, threadId: thread.id, page: {} })),
                as(other)(client.createThread({ id, thread: { messageId: anchor.id } })),
                as(other)(client.updateThread({ id, threadId: thread.id, changes: { title: "mine now" } })),
                as(other)(
                  client.appendThreadMessage({ id, threadId: thread.id, message: { role: "user", content: "mine" } })
                ),
                as(other)(client.deleteThread({ id, threadId: thread.id }))
              ]
            ) {
              expect(failureTag(yield* Effect.exit(foreign)), transport).toBe("NotFound")
            }

            yield* as(user)(client.deleteThread({ id, threadId: thread.id }))
            expect((yield* as(user)(client.listThreads({ id, page: {} }))).items, transport).toEqual([])
            const deleted = yield* Effect.exit(
              as(user)(client.listThreadMessages({ id, threadId: thread.id, page: {} }))
            )
            expect(failureTag(deleted), transport).toBe("NotFound")
          }
        }))
    })

    describe("personal data, usage and administration", () => {
      it.effect("your data, consent and a key's usage; another's key is NotFound", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const data = yield* as(user)(client.exportPersonalData())
            expect(data.user.id, transport).toBe(user.id)
            const consent = yield* as(user)(client.updateConsent({ marketingConsent: true }))
            expect(consent.marketingConsent).toBe(true)
            expect((yield* as(user)(client.getConsent())).marketingConsent).toBe(true)
            yield* as(user)(client.updateConsent({ marketingConsent: false }))

            const key = yield* as(user)(
              client.createApiKey({ name: uniqueName(`usage_${transport}`), scopes: ["chat"] })
            )
            const usage = yield* as(user)(client.apiKeyUsage({ id: key.apiKey.id }))
            expect(usage).toMatchObject({ apiKeyId: key.apiKey.id, requests: 0, totalTokens: 0 })
            expect(failureTag(yield* Effect.exit(as(other)(client.apiKeyUsage({ id: key.apiKey.id }))))).toBe(
              "NotFound"
            )
            const mine = yield* as(user)(client.myUsage({ groupBy: "source" }))
            expect(mine, transport).toMatchObject({ from: null, to: null, groupBy: "source" })
            const [from, to] = [
              DateTime.unsafeMake("2021-03-02T00:00:00Z"),
              DateTime.unsafeMake("2021-03-01T00:00:00Z")
            ]
            expect(failureTag(yield* Effect.exit(as(user)(client.myUsage({ from, to, groupBy: "day" }))))).toBe(
              "ValidationError"
            )
            // No budget on this server: none holds the user.
            expect(yield* as(user)(client.myBudget())).toMatchObject({ tokens: null, remaining: null, exempt: false })
          }
        }))

      it.effect("deleteAccount erases the account: it cannot sign in again; a wrong password is refused", () =>
        Effect.gen(function*() {
          const { clients } = yield* TheCast
          for (const [transport, client] of clients) {
            const doomed = yield* signUp()
            const wrong = yield* Effect.exit(as(doomed)(client.deleteAccount({ password: Redacted.make("not it") })))
            expect(failureTag(wrong), transport).not.toBe("success")
            yield* as(doomed)(client.deleteAccount({ password: Redacted.make(doomed.password) }))
            const login = yield* Effect.exit(
              client.login({ login: doomed.email, password: Redacted.make(doomed.password) })
            )
            expect(failureTag(login), transport).toBe("Unauthorized")
          }
        }))

      it.effect("administrators list users, change roles, disable and enable, read the audit trail", () =>
        Effect.gen(function*() {
          const { admin, clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const target = yield* signUp()
            const users = yield* as(admin)(client.listUsers({ limit: 100 }))
            expect(users.items.length, transport).toBeGreaterThan(0)
            const promoted = yield* as(admin)(client.setRole({ id: target.id, role: "admin" as never }))
            expect(promoted.role).toBe("admin")
            yield* as(admin)(client.setRole({ id: target.id, role: "user" as never }))
            const disabled = yield* as(admin)(client.disableUser({ id: target.id }))
            expect(disabled.disabled).toBe(true)
            expect(failureTag(yield* Effect.exit(as(target)(client.me())))).toBe("Unauthorized")
            yield* as(admin)(client.enableUser({ id: target.id }))
            const audit = yield* as(admin)(client.listAuditEvents({ targetId: target.id }))
            expect(audit.items.length, transport).toBeGreaterThan(0)
            const usage = yield* as(admin)(client.usageReport({ userId: target.id, groupBy: "user" }))
            expect(usage, transport).toMatchObject({ groupBy: "user", groups: [], totals: { requests: 0 } })

            const refused: Array<Exit.Exit<unknown, { readonly _tag: string }>> = [
              yield* Effect.exit(as(user)(client.listUsers({}))),
              yield* Effect.exit(as(user)(client.disableUser({ id: target.id }))),
              yield* Effect.exit(as(user)(client.setRole({ id: target.id, role: "admin" as never }))),
              yield* Effect.exit(as(user)(client.listAuditEvents({}))),
              yield* Effect.exit(as(user)(client.usageReport({ groupBy: "model" })))
            ]
            expect(refused.map((exit) => failureTag(exit)), transport).toEqual([
              "Forbidden",
              "Forbidden",
              "Forbidden",
              "Forbidden",
              "Forbidden"
            ])
            const missing = yield* Effect.exit(
              as(admin)(client.enableUser({ id: user.id.replace(/.$/, "0") as never }))
            )
            expect(["NotFound", "success"]).toContain(failureTag(missing))
          }
        }))
    })

    describe("model downloads", () => {
      it.effect("pullModel is for administrators, and a typed failure where the provider cannot pull", () =>
        Effect.gen(function*() {
          const { admin, clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const provider = yield* as(admin)(client.createProvider({
              name: uniqueName(`pull_${transport}`),
              kind: "ollama",
              baseUrl: "http://127.0.0.1:9"
            } as never))
            const refused = yield* Effect.exit(as(user)(client.pullModel({ id: provider.id, name: "llama3" })))
            expect(failureTag(refused), transport).toBe("Forbidden")
            const pulled = yield* Effect.exit(as(admin)(client.pullModel({ id: provider.id, name: "llama3" })))
            // The download starts in the background (the model `loading`), or the provider is refused at once.
            expect(["success", "ProviderUnreachable", "ProviderTimeout"], transport).toContain(failureTag(pulled))
            yield* as(admin)(client.deleteProvider({ id: provider.id }))
          }
        }))
    })

    describe("export and import", () => {
      it.effect("a conversation exported as JSON imports as a new one; as Markdown it reads; another's is NotFound", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const created = yield* as(user)(client.createConversation({ title: `exported over ${transport}` }))
            yield* as(user)(client.appendMessage({ id: created.id, message: { role: "user", content: "to export" } }))
            const document = yield* as(user)(client.exportConversation({ id: created.id }))
            const imported = yield* as(user)(client.importConversation({ document }))
            expect(imported.id, transport).not.toBe(created.id)
            expect(imported.messageCount).toBe(1)
            const markdown = yield* as(user)(client.exportConversationMarkdown({ id: created.id }))
            expect(markdown).toContain("to export")
            expect(failureTag(yield* Effect.exit(as(other)(client.exportConversation({ id: created.id }))))).toBe(
              "NotFound"
            )
          }
        }))

      it.effect("the export files of Open WebUI and ChatGPT import as new conversations; a broken one is refused", () =>
        Effect.gen(function*() {
          const { clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const fromWebUi = yield* as(user)(client.importOpenWebUi({ file: exportFile("open-webui-chats.json") }))
            expect(fromWebUi.conversations.map((one) => one.messageCount), transport).toEqual([5, 3])
            const fromChatGpt = yield* as(user)(
              client.importChatGpt({ file: exportFile("chatgpt-conversations.json") })
            )
            expect(fromChatGpt, transport).toMatchObject({ messageCount: 9, skippedCount: 5 })
            const imported = yield* as(user)(client.getConversation({ id: fromChatGpt.conversations[0]!.id }))
            expect(imported.title).toBe("Packing for Iceland")
            // Parents in a cycle.
            const broken = exportFile("chatgpt-conversations.json")
            broken[1].mapping["client-created-root"].parent = "f4d5e6f7-0000-4000-8000-000000000024"
            const refused = yield* Effect.exit(as(user)(client.importChatGpt({ file: broken })))
            expect(failureTag(refused), transport).toBe("ValidationError")
          }
        }))
    })

    describe("models", () => {
      it.effect("lists the usable models; administration is Forbidden to a user", () =>
        Effect.gen(function*() {
          const { clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const models = yield* as(user)(client.listModels({}))
            expect(models.items.length, transport).toBeGreaterThan(0)
            const model = yield* as(user)(client.getModel({ id: models.items[0]!.id }))
            expect(model.id).toBe(models.items[0]!.id)
            expect(failureTag(yield* Effect.exit(as(user)(client.listProviders()))), transport).toBe("Forbidden")
          }
        }))

      it.effect("providers: an administrator creates, reads, updates, checks, syncs and deletes one", () =>
        Effect.gen(function*() {
          const { admin, clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const name = uniqueName(`rpc ${dialect} ${transport}`)
            const payload = {
              name,
              kind: "openai-compatible" as const,
              // Nothing listens there: the provider is unreachable.
              baseUrl: "http://127.0.0.1:9",
              credential: Redacted.make("sk-rpc-test-1234"),
              connectTimeoutMs: 500,
              requestTimeoutMs: 1_000
            }
            const forbidden = yield* Effect.exit(as(user)(client.createProvider(payload)))
            expect(failureTag(forbidden), transport).toBe("Forbidden")
            const created = yield* as(admin)(client.createProvider(payload))
            expect(created, transport).toMatchObject({
              name,
              kind: "openai-compatible",
              hasCredential: true,
              credentialLast4: "1234",
              enabled: true,
              source: "admin"
            })
            expect(failureTag(yield* Effect.exit(as(admin)(client.createProvider(payload)))), transport).toBe(
              "Conflict"
            )
            expect((yield* as(admin)(client.getProvider({ id: created.id }))).name, transport).toBe(name)
            expect(failureTag(yield* Effect.exit(as(user)(client.getProvider({ id: created.id })))), transport).toBe(
              "Forbidden"
            )
            const listed = yield* as(admin)(client.listProviders())
            expect(listed.items.map((provider) => provider.id), transport).toContain(created.id)

            const updated = yield* as(admin)(
              client.updateProvider({ id: created.id, changes: { name: `${name} renamed`, credential: null } })
            )
            expect(updated, transport).toMatchObject({ name: `${name} renamed`, hasCredential: false })
            const health = yield* as(admin)(client.providerHealth({ id: created.id }))
            expect(health, transport).toMatchObject({
              reachable: false,
              latencyMs: null,
              error: { _tag: "ProviderUnreachable" }
            })
            const sync = yield* Effect.exit(as(admin)(client.syncProvider({ id: created.id })))
            expect(failureTag(sync), transport).toBe("ProviderUnreachable")
            const userSync = yield* Effect.exit(as(user)(client.syncProvider({ id: created.id })))
            expect(failureTag(userSync), transport).toBe("Forbidden")
            const userHealth = yield* Effect.exit(as(user)(client.providerHealth({ id: created.id })))
            expect(failureTag(userHealth), transport).toBe("Forbidden")
            const userDelete = yield* Effect.exit(as(user)(client.deleteProvider({ id: created.id })))
            expect(failureTag(userDelete), transport).toBe("Forbidden")

            yield* as(admin)(client.deleteProvider({ id: created.id }))
            for (
              const missing of [
                as(admin)(client.getProvider({ id: created.id })),
                as(admin)(client.updateProvider({ id: created.id, changes: { enabled: false } })),
                as(admin)(client.providerHealth({ id: created.id })),
                as(admin)(client.syncProvider({ id: created.id })),
                as(admin)(client.deleteProvider({ id: created.id }))
              ]
            ) {
              expect(failureTag(yield* Effect.exit(missing)), transport).toBe("NotFound")
            }
          }
        }))

      it.scoped("providers: a reachable one is healthy and syncs its models", () =>
        Effect.gen(function*() {
          const { admin, clients } = yield* TheCast
          for (const [transport, client] of clients) {
            const fake = yield* fakeProvider("openai", [{ name: `rpc-synced-${transport}` }])
            const provider = yield* as(admin)(client.createProvider({
              name: uniqueName(`rpc synced ${dialect} ${transport}`),
              kind: "openai-compatible",
              baseUrl: fake.url,
              credential: Redacted.make(fake.apiKey),
              connectTimeoutMs: 500,
              requestTimeoutMs: 1_000
            }))
            // Deleted at the end: its models must not outlive the fake (a chat could pick them).
            yield* Effect.gen(function*() {
              const health = yield* as(admin)(client.providerHealth({ id: provider.id }))
              expect(health, transport).toMatchObject({ reachable: true, error: null })
              expect(health.latencyMs).toBeGreaterThanOrEqual(0)
              const synced = yield* as(admin)(client.syncProvider({ id: provider.id }))
              expect(synced, transport).toMatchObject({ added: 1, updated: 0, unlisted: [] })
              expect(synced.models.map((model) => model.providerModel), transport).toEqual([`rpc-synced-${transport}`])
            }).pipe(Effect.ensuring(Effect.orDie(as(admin)(client.deleteProvider({ id: provider.id })))))
          }
        }))

      it.effect("models: an administrator adds one by hand, renames, starts, stops and deletes it", () =>
        Effect.gen(function*() {
          const { admin, clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const provider = yield* as(admin)(client.createProvider({
              name: uniqueName(`rpc models ${dialect} ${transport}`),
              kind: "openai-compatible",
              baseUrl: "http://127.0.0.1:9",
              connectTimeoutMs: 500,
              requestTimeoutMs: 1_000
            }))
            yield* Effect.gen(function*() {
              const payload = {
                providerId: provider.id,
                providerModel: `rpc-model-${transport}`,
                displayName: `RPC model over ${transport}`,
                // Disabled, so that no chat picks it (its provider is unreachable).
                enabled: false,
                contextWindow: 8192,
                capabilities: ["completion"]
              }
              const forbidden = yield* Effect.exit(as(user)(client.createModel(payload)))
              expect(failureTag(forbidden), transport).toBe("Forbidden")
              const created = yield* as(admin)(client.createModel(payload))
              // Added disabled, it is `stopped` until started.
              expect(created, transport).toMatchObject({ ...payload, status: "stopped", isLocal: false })
              expect(failureTag(yield* Effect.exit(as(admin)(client.createModel(payload)))), transport).toBe("Conflict")
              const noProvider = yield* Effect.exit(
                as(admin)(client.createModel({
                  ...payload,
                  providerId: "0192f0c1-7d3a-7b1e-9c4e-3f2a1b0c9d8e" as ProviderId
                }))
              )
              expect(failureTag(noProvider), transport).toBe("NotFound")
              // A disabled model is invisible to users.
              expect(failureTag(yield* Effect.exit(as(user)(client.getModel({ id: created.id })))), transport).toBe(
                "NotFound"
              )

              const renamed = yield* as(admin)(
                client.updateModel({ id: created.id, changes: { displayName: `renamed over ${transport}` } })
              )
              expect(renamed, transport).toMatchObject({ displayName: `renamed over ${transport}`, enabled: false })
              const userUpdate = yield* Effect.exit(
                as(user)(client.updateModel({ id: created.id, changes: { enabled: true } }))
              )
              expect(failureTag(userUpdate), transport).toBe("Forbidden")

              // An OpenAI-compatible provider has no runtime to load into: the status alone changes.
              const started = yield* as(admin)(client.startModel({ id: created.id }))
              expect(started.status, transport).toBe("available")
              const stopped = yield* as(admin)(client.stopModel({ id: created.id }))
              expect(stopped.status, transport).toBe("stopped")
              expect(failureTag(yield* Effect.exit(as(user)(client.startModel({ id: created.id })))), transport).toBe(
                "Forbidden"
              )
              expect(failureTag(yield* Effect.exit(as(user)(client.stopModel({ id: created.id })))), transport).toBe(
                "Forbidden"
              )
              expect(failureTag(yield* Effect.exit(as(user)(client.deleteModel({ id: created.id })))), transport).toBe(
                "Forbidden"
              )

              yield* as(admin)(client.deleteModel({ id: created.id }))
              for (
                const missing of [
                  as(admin)(client.getModel({ id: created.id })),
                  as(admin)(client.updateModel({ id: created.id, changes: { enabled: true } })),
                  as(admin)(client.startModel({ id: created.id })),
                  as(admin)(client.stopModel({ id: created.id })),
                  as(admin)(client.deleteModel({ id: created.id }))
                ]
              ) {
                expect(failureTag(yield* Effect.exit(missing)), transport).toBe("NotFound")
              }
            }).pipe(Effect.ensuring(Effect.orDie(as(admin)(client.deleteProvider({ id: provider.id })))))
          }
        }))

      it.effect("presets: personal for a user, global for an administrator only; another user's is NotFound", () =>
        Effect.gen(function*() {
          const { admin, clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const name = uniqueName(`rpc ${dialect} ${transport}`)
            const personal = yield* as(user)(
              client.createModelConfig({ name, systemPrompt: "Be brief.", temperature: 0.5 })
            )
            expect(personal, transport).toMatchObject({
              name,
              scope: "personal",
              systemPrompt: "Be brief.",
              temperature: 0.5,
              maxTokens: null
            })
            expect(failureTag(yield* Effect.exit(as(user)(client.createModelConfig({ name })))), transport).toBe(
              "Conflict"
            )
            // Parameters the server sets itself are refused.
            const reserved = yield* Effect.exit(
              as(user)(client.createModelConfig({ name: `${name} reserved`, extraParams: { stream: false } }))
            )
            expect(failureTag(reserved), transport).toBe("ValidationError")
            const global = yield* Effect.exit(
              as(user)(client.createModelConfig({ name: `${name} global`, scope: "global" }))
            )
            expect(failureTag(global), transport).toBe("Forbidden")

            expect((yield* as(user)(client.getModelConfig({ id: personal.id }))).name, transport).toBe(name)
            const listed = yield* as(user)(client.listModelConfigs())
            expect(listed.items.map((config) => config.id), transport).toContain(personal.id)
            const edited = yield* as(user)(client.updateModelConfig({ id: personal.id, changes: { maxTokens: 10 } }))
            expect(edited, transport).toMatchObject({ maxTokens: 10, temperature: 0.5 })
            for (
              const foreign of [
                as(other)(client.getModelConfig({ id: personal.id })),
                as(other)(client.updateModelConfig({ id: personal.id, changes: { maxTokens: 20 } })),
                as(other)(client.deleteModelConfig({ id: personal.id }))
              ]
            ) {
              expect(failureTag(yield* Effect.exit(foreign)), transport).toBe("NotFound")
            }
            expect((yield* as(other)(client.listModelConfigs())).items.map((config) => config.id)).not.toContain(
              personal.id
            )

            const house = yield* as(admin)(
              client.createModelConfig({ name: `${name} house`, scope: "global", temperature: 0.2 })
            )
            expect(house.scope, transport).toBe("global")
            const userEdit = yield* Effect.exit(
              as(user)(client.updateModelConfig({ id: house.id, changes: { temperature: 0.3 } }))
            )
            expect(failureTag(userEdit), transport).toBe("Forbidden")
            expect(failureTag(yield* Effect.exit(as(user)(client.deleteModelConfig({ id: house.id })))), transport)
              .toBe("Forbidden")
            yield* as(admin)(client.deleteModelConfig({ id: house.id }))

            yield* as(user)(client.deleteModelConfig({ id: personal.id }))
            const deleted = yield* Effect.exit(as(user)(client.getModelConfig({ id: personal.id })))
            expect(failureTag(deleted), transport).toBe("NotFound")
          }
        }))
    })

    describe("the example client (examples/rpc-chat.ts)", () => {
      it.effect("signs in, starts a chat and prints the streamed answer", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const { user } = yield* TheCast
          const child = spawnScript("examples/rpc-chat.ts", {
            WEBPLUS_URL: baseUrl,
            WEBPLUS_LOGIN: user.email,
            WEBPLUS_PASSWORD: user.password
          }, ["hello", "from", "the", "example"])
          const finished = yield* collect(child).exited.pipe(Effect.timeout("30 seconds"))
          expect(finished.code, finished.stderr).toBe(0)
          expect(finished.stdout).toContain("You said: hello from the example")
          expect(finished.stdout).toContain("[complete]")
          expect(finished.stderr).toMatch(/^conversation [0-9a-f-]{36}, answer [0-9a-f-]{36}/)
        }), { timeout: 40_000 })
    })

    describe("chat", () => {
      const events = (client: Client, user: TestUser, content: string) =>
        as(user)(Stream.runCollect(client.newChat({ content })))

      it.effect("streams the answer's events in order, ending with the stored answer", () =>
        Effect.gen(function*() {
          const { clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const received = [...(yield* events(client, user, `hello over ${transport}`))]
            expect(received[0]?._tag, transport).toBe("start")
            expect(received.at(-1)?._tag, transport).toBe("done")
            expect(received.map((event) => event.id)).toEqual(received.map((_, index) => index + 1))
            const text = received.flatMap((event) => event._tag === "delta" ? [event.text] : []).join("")
            const done = received.at(-1) as Extract<ChatEvent, { _tag: "done" }>
            expect(done.message.status).toBe("complete")
            expect(done.message.content).toBe(text)
            expect(text).toContain(`hello over ${transport}`)

            // The conversation continues through `chat`, and the answer is stored.
            const start = received[0] as Extract<ChatEvent, { _tag: "start" }>
            const next = [
              ...(yield* as(user)(
                Stream.runCollect(client.chat({ id: start.conversationId, message: { content: "again" } }))
              ))
            ]
            const stored = yield* as(user)(
              client.listMessages({ id: start.conversationId, query: { view: "active" } })
            )
            expect(stored.items).toHaveLength(4)
            expect((next.at(-1) as Extract<ChatEvent, { _tag: "done" }>).message.id).toBe(stored.items[3]!.id)
          }
        }))

      it.effect("the client cancels an answer: it ends cancelled, its text kept", () =>
        Effect.gen(function*() {
          const { clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const received: Array<ChatEvent> = []
            yield* as(user)(
              client.newChat({ content: "a long question that takes a while to echo back word by word" }).pipe(
                Stream.runForEach((event) =>
                  Effect.gen(function*() {
                    received.push(event)
                    if (event._tag === "delta" && received.filter((e) => e._tag === "delta").length === 2) {
                      const start = received[0] as Extract<ChatEvent, { _tag: "start" }>
                      const cancelled = yield* as(user)(
                        client.cancelAnswer({ id: start.conversationId, messageId: start.answer.id })
                      )
                      expect(cancelled.status, transport).toBe("cancelled")
                    }
                  })
                )
              )
            )
            const done = received.at(-1) as Extract<ChatEvent, { _tag: "done" }>
            expect(done._tag, transport).toBe("done")
            expect(done.message.status, transport).toBe("cancelled")
            expect(done.message.content.length).toBeGreaterThan(0)
          }
        }))

      it.effect("a slow reader gets every event in order; the answer is finished and stored meanwhile", () =>
        Effect.gen(function*() {
          const { clients, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const received: Array<ChatEvent> = []
            let storedWhileReading: string | null = null
            yield* as(user)(
              client.newChat({ content: `slowly over ${transport}, one word after another` }).pipe(
                Stream.runForEach((event) =>
                  Effect.gen(function*() {
                    received.push(event)
                    if (received.length !== 2) return yield* Effect.sleep("5 millis")
                    // Stop reading for longer than the whole answer takes to generate.
                    yield* Effect.sleep("1500 millis")
                    const start = received[0] as Extract<ChatEvent, { _tag: "start" }>
                    const stored = yield* as(user)(
                      client.getMessage({ id: start.conversationId, messageId: start.answer.id })
                    )
                    storedWhileReading = stored.status
                  })
                )
              )
            )
            expect(storedWhileReading, transport).toBe("complete")
            expect(received.map((event) => event.id)).toEqual(received.map((_, index) => index + 1))
            expect(received.at(-1)?._tag).toBe("done")
          }
        }))

      it.effect("another user's conversation is NotFound; no credential is Unauthorized", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const mine = yield* as(user)(client.createConversation({}))
            const foreign = yield* Effect.exit(
              as(other)(Stream.runCollect(client.chat({ id: mine.id, message: { content: "hi" } })))
            )
            expect(failureTag(foreign), transport).toBe("NotFound")
            const anonymous = yield* Effect.exit(Stream.runCollect(client.newChat({ content: "hi" })))
            expect(failureTag(anonymous), transport).toBe("Unauthorized")
            const model = yield* Effect.exit(
              as(user)(Stream.runCollect(client.newChat({ content: "hi", modelId: mine.id as unknown as LlmModelId })))
            )
            expect(failureTag(model), transport).toBe("ValidationError")
          }
        }))

      it.effect("regenerate: a new sibling answer streams to `done`; a question cannot be regenerated", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const first = yield* eventsOf(user, client.newChat({ content: `regenerate over ${transport}` }))
            const { answer, conversationId: id, question } = startOf(first)
            const again = yield* eventsOf(user, client.regenerate({ id, messageId: answer.id, choice: {} }))
            expect(again[0]?._tag, transport).toBe("start")
            expect(again.map((event) => event.id)).toEqual(again.map((_, index) => index + 1))
            const done = doneOf(again)
            expect(done._tag, transport).toBe("done")
            expect(done.message, transport).toMatchObject({
              parentId: question!.id,
              status: "complete",
              siblingCount: 2
            })
            expect(done.message.id).not.toBe(answer.id)
            expect(done.message.content).toContain(`regenerate over ${transport}`)
            const branch = yield* as(user)(client.listMessages({ id, query: { view: "active" } }))
            expect(branch.items.map((message) => message.id), transport).toEqual([question!.id, done.message.id])

            const ofQuestion = yield* Effect.exit(
              eventsOf(user, client.regenerate({ id, messageId: question!.id, choice: {} }))
            )
            expect(failureTag(ofQuestion), transport).toBe("ValidationError")
            const foreign = yield* Effect.exit(
              eventsOf(other, client.regenerate({ id, messageId: answer.id, choice: {} }))
            )
            expect(failureTag(foreign), transport).toBe("NotFound")
          }
        }))

      it.effect("continueChat answers an edited question; another user's conversation is NotFound", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const first = yield* eventsOf(user, client.newChat({ content: `the first question over ${transport}` }))
            const { conversationId: id, question } = startOf(first)
            const edited = yield* as(user)(
              client.editMessage({
                id,
                messageId: question!.id,
                edit: { content: `the edited question over ${transport}` }
              })
            )
            const continued = yield* eventsOf(user, client.continueChat({ id, choice: {} }))
            const start = startOf(continued)
            expect(start._tag, transport).toBe("start")
            // No new question: the edit is the one answered.
            expect(start.question, transport).toBeNull()
            const done = doneOf(continued)
            expect(done.message, transport).toMatchObject({ parentId: edited.id, status: "complete" })
            expect(done.message.content).toContain(`the edited question over ${transport}`)

            const foreign = yield* Effect.exit(eventsOf(other, client.continueChat({ id, choice: {} })))
            expect(failureTag(foreign), transport).toBe("NotFound")
          }
        }))

      it.effect("resumeAnswer after an event of a finished answer gives the rest, ending with `done`", () =>
        Effect.gen(function*() {
          const { clients, other, user } = yield* TheCast
          for (const [transport, client] of clients) {
            const original = yield* eventsOf(user, client.newChat({ content: `resume over ${transport}, please` }))
            const { answer, conversationId: id, question } = startOf(original)
            expect(original.length, transport).toBeGreaterThan(3)
            const resumed = yield* eventsOf(user, client.resumeAnswer({ id, messageId: answer.id, after: 2 }))
            expect(resumed, transport).toEqual(original.slice(2))
            expect(doneOf(resumed).message, transport).toMatchObject({ id: answer.id, status: "complete" })
            // From the start: every event again.
            const whole = yield* eventsOf(user, client.resumeAnswer({ id, messageId: answer.id }))
            expect(whole.map((event) => event.id), transport).toEqual(original.map((event) => event.id))

            const ofQuestion = yield* Effect.exit(eventsOf(user, client.resumeAnswer({ id, messageId: question!.id })))
            expect(failureTag(ofQuestion), transport).toBe("NotFound")
            const foreign = yield* Effect.exit(eventsOf(other, client.resumeAnswer({ id, messageId: answer.id })))
            expect(failureTag(foreign), transport).toBe("NotFound")
          }
        }))
    })
  })
}

describe("rpc defects", () => {
  for (const dialect of dialects) {
    it.scopedLive(
      `on ${dialect}: logged with the request id and the call, answered with the request id only, ending that call alone`,
      () =>
        Effect.gen(function*() {
          const logs = capturedLogs()
          const server = yield* startTestServer(
            testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } }).pipe(Layer.provide(logs.layer))
          )
          const on = Effect.provideService(TestServer, server)
          const admin = yield* signUp().pipe(on)
          const socket = yield* overWebSocket(server.baseUrl)
          const http = yield* overHttp(server.baseUrl, { "x-request-id": "rpc-defect-1" })
          // An answer under way on the socket: 150 words, one every 20 ms.
          const words = Array.from({ length: 150 }, (_, index) => `w${index}`).join(" ")
          const answer = yield* Effect.fork(eventsOf(admin, socket.newChat({ content: words })))
          yield* Effect.sleep("300 millis")

          // A statement that cannot run is a defect of the handler.
          const renameAudit = (from: string, to: string) =>
            inServerDatabase(
              Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(`ALTER TABLE ${from} RENAME TO ${to}`))
            )
              .pipe(on)
          yield* renameAudit("audit_events", "audit_events_gone")
          const overHttpExit = yield* Effect.exit(as(admin)(http.listAuditEvents({})))
          const overSocketExit = yield* Effect.exit(as(admin)(socket.listAuditEvents({})))
          yield* renameAudit("audit_events_gone", "audit_events")

          expect(defectMessage(overHttpExit)).toBe("Internal server error (request id rpc-defect-1)")
          const onSocket = /^Internal server error \(request id ([0-9a-f-]{36})\)$/.exec(defectMessage(overSocketExit))
          expect(onSocket, defectMessage(overSocketExit)).not.toBeNull()
          for (const exit of [overHttpExit, overSocketExit]) {
            expect(Cause.pretty((exit as Exit.Failure<unknown, unknown>).cause)).not.toMatch(
              /audit_events|no such table|does not exist|SELECT/i
            )
          }

          // The answer under way on the same socket went on to its end.
          const events = yield* Fiber.join(answer)
          expect(doneOf(events).message.status).toBe("complete")
          expect(doneOf(events).message.content).toContain("w149")

          // The log has what the client was not told, under the request id it was.
          const failures = logs.lines.filter((line) => line.message === "Unexpected failure")
          expect(failures.map((line) => [line.annotations.requestId, line.annotations.rpc])).toEqual([
            ["rpc-defect-1", "listAuditEvents"],
            [onSocket![1], "listAuditEvents"]
          ])
          for (const failure of failures) expect(failure.cause).toMatch(/SqlError/)
          // And the client is still served.
          expect((yield* as(admin)(socket.me())).id).toBe(admin.id)
        }),
      30_000
    )
  }
})

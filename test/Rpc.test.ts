/**
 * The RPC interface against the running server, with a real `RpcClient`
 * over HTTP (`POST /rpc`, NDJSON) and over WebSocket (`GET /rpc`, JSON), on both
 * dialects: accounts, conversations, models, and chat as a stream (in order,
 * ending with the stored answer), cancelled from the client; typed failures
 * and isolation between users.
 */
import { FetchHttpClient } from "@effect/platform"
import { NodeSocket } from "@effect/platform-node"
import { RpcClient, type RpcClientError, RpcSerialization } from "@effect/rpc"
import { describe, expect, layer } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer, Option, Redacted, Stream } from "effect"
import type { ChatEvent } from "../src/Chat/Api.js"
import type { LlmModelId } from "../src/Domain/Ids.js"
import { WebPlusRpcs } from "../src/Rpc/Api.js"
import { rpcPath } from "../src/Rpc/Server.js"
import { signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { collect, spawnScript } from "./fixtures/Process.js"
import { TestServer, testServer } from "./fixtures/Server.js"

type Client = RpcClient.FromGroup<typeof WebPlusRpcs, RpcClientError.RpcClientError>

interface Cast {
  readonly user: TestUser
  readonly other: TestUser
  readonly clients: ReadonlyArray<readonly [string, Client]>
}

class TheCast extends Context.Tag("test/Rpc/Cast")<TheCast, Cast>() {}

/** A client of `protocol`, whose connection lasts as long as the surrounding scope. */
const clientOver = <E>(protocol: Layer.Layer<RpcClient.Protocol, E>) =>
  Effect.flatMap(Layer.build(protocol), (context) => Effect.provide(RpcClient.make(WebPlusRpcs), context))

/** `/rpc` over HTTP, NDJSON. */
const overHttp = (baseUrl: string) =>
  clientOver(
    RpcClient.layerProtocolHttp({ url: `${baseUrl}${rpcPath}` }).pipe(
      Layer.provide([RpcSerialization.layerNdjson, FetchHttpClient.layer])
    )
  )

/** `/rpc` over one WebSocket, JSON. */
const overWebSocket = (baseUrl: string) =>
  clientOver(
    RpcClient.layerProtocolSocket().pipe(
      Layer.provide([
        NodeSocket.layerWebSocket(`${baseUrl.replace(/^http/, "ws")}${rpcPath}`),
        RpcSerialization.layerJson
      ])
    )
  )

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const { baseUrl } = yield* TestServer
      // The first account is the administrator.
      yield* signUp()
      const [user, other] = yield* Effect.all([signUp(), signUp()])
      const clients = [["http", yield* overHttp(baseUrl)], ["websocket", yield* overWebSocket(baseUrl)]] as const
      return { user, other, clients }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } })))

/** Runs `effect` with `user`'s access token on every call it makes. */
const as = (user: TestUser) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  RpcClient.withHeaders(effect, { authorization: `Bearer ${user.accessToken}` })

/** The tag of an exit's typed failure ("success" or "defect" otherwise). */
const failureTag = <A, E extends { readonly _tag: string }>(exit: Exit.Exit<A, E>): string =>
  Exit.isSuccess(exit) ? "success" : Option.match(Cause.failureOption(exit.cause), {
    onNone: () => `defect: ${Cause.pretty(exit.cause).slice(0, 300)}`,
    onSome: (error) => error._tag
  })

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`rpc on ${dialect}`, (it) => {
    describe("accounts", () => {
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
    })
  })
}

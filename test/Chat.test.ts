/**
 * Chat over real HTTP against loopback providers, on both dialects: answers
 * streamed as SSE or waited for as JSON, stored before, during and after the
 * provider streams; provider faults (a stream dying midway, 429 then success,
 * a slow first token, malformed chunks); a client that goes away; cancel;
 * resume from an event id; regenerate and continue; the context window; the
 * requirements' `POST /api/{user_id}/chat` contract; two instances taking
 * turns on one conversation; and an instance killed mid-answer.
 */
import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import { describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import * as Http from "node:http"
import type * as Net from "node:net"
import { titleQueue } from "../src/Chat.js"
import { call, createKey, expectStatus, signUp, type TestUser, uniqueName } from "./fixtures/Auth.js"
import { dialects, pgClientFor, sqliteClientFor } from "./fixtures/Database.js"
import { conversationDocument, documentMessage } from "./fixtures/Documents.js"
import { openEvents } from "./fixtures/Events.js"
import { collect, spawnEntry } from "./fixtures/Process.js"
import {
  chatPath,
  chatRequests,
  type FakeProvider,
  fakeProvider,
  registerFake,
  upstreamSecret
} from "./fixtures/Providers.js"
import { redisPrefix, redisUrl } from "./fixtures/Redis.js"
import { inServerDatabase, startTestServer, testEnvironment, TestServer, testServer } from "./fixtures/Server.js"
import { openSse, type SseEvent } from "./fixtures/Sse.js"

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
  readonly other: TestUser
  readonly openai: FakeProvider
  /** The loopback OpenAI's models: a large context window, and a small one. */
  readonly modelId: string
  readonly smallModelId: string
}

class TheCast extends Context.Tag("test/Chat/Cast")<TheCast, Cast>() {}

/** Short timeouts and flushes, so faults show within a test. */
const chatEnv = {
  CHAT_FLUSH_INTERVAL: "40 millis",
  CHAT_FIRST_CHUNK_TIMEOUT: "1 second",
  CHAT_IDLE_TIMEOUT: "1 second",
  CHAT_RETRY_ATTEMPTS: "3",
  CHAT_RETRY_BASE_DELAY: "10 millis",
  CHAT_RETRY_MAX_DELAY: "50 millis",
  PROVIDER_BREAKER_THRESHOLD: "1000",
  MODEL_STATUS_POLL_INTERVAL: "0 seconds",
  // Titles are jobs: taken soon, tried again soon.
  JOBS_POLL_INTERVAL: "100 millis",
  JOBS_RETRY_BASE_DELAY: "50 millis",
  JOBS_RETRY_MAX_DELAY: "100 millis"
}

/** Registers a loopback provider with short timeouts; its models by provider model name. */
const registerProvider = (admin: TestUser, fake: FakeProvider) =>
  Effect.map(
    registerFake(admin, fake, { connectTimeoutMs: 1_000, requestTimeoutMs: 2_000 }),
    ({ models, provider }) => ({ models, providerId: provider.id })
  )

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const [user, other] = yield* Effect.all([signUp(), signUp()])
      const openai = yield* fakeProvider("openai", [{ name: "gpt-loop" }, { name: "gpt-small", contextLength: 400 }])
      const { models } = yield* registerProvider(admin, openai)
      return { admin, user, other, openai, modelId: models["gpt-loop"]!, smallModelId: models["gpt-small"]! }
    })
  ).pipe(Layer.provideMerge(testServer({ dialect, env: chatEnv })))

/** Resets the loopback model to a plain answer; returns it for further scripting. */
const script = (chat: FakeProvider["chat"]) =>
  Effect.map(TheCast, ({ openai }) => {
    openai.chat = chat
    openai.faults.clear()
    openai.requests.length = 0
    openai.cutShort = 0
    return openai
  })

/** A titled conversation of the user on the loopback model (titled: no title request to the provider). */
const newConversation = Effect.gen(function*() {
  const { modelId, user } = yield* TheCast
  return expectStatus(
    yield* call("POST", "/api/v1/conversations", { auth: user.accessToken, body: { title: "Test", modelId } }),
    201
  ).id as string
})

const asUser = (method: "GET" | "POST" | "PUT", path: string, body?: unknown) =>
  Effect.flatMap(TheCast, ({ user }) => call(method, path, { auth: user.accessToken, ...(body ? { body } : {}) }))

const chatSse = (conversationId: string, body: Record<string, unknown>) =>
  Effect.flatMap(
    TheCast,
    ({ user }) => openSse("POST", `/api/v1/conversations/${conversationId}/chat`, { auth: user.accessToken, body })
  )

const getMessage = (conversationId: string, messageId: string) =>
  Effect.map(
    asUser("GET", `/api/v1/conversations/${conversationId}/messages/${messageId}`),
    (reply) => expectStatus(reply, 200)
  )

/** Polls `effect` until `predicate` holds (generation and titles run in the background). */
const eventually = <A>(effect: Effect.Effect<A, never, any>, predicate: (value: A) => boolean, attempts = 200) =>
  Effect.gen(function*() {
    let last: A | undefined
    for (let attempt = 0; attempt < attempts; attempt++) {
      last = yield* effect
      if (predicate(last)) return last
      yield* Effect.sleep("25 millis")
    }
    return expect.fail(`never happened; last: ${JSON.stringify(last)}`)
  })

const textOf = (events: ReadonlyArray<SseEvent>) =>
  events.filter((event) => event.event === "delta").map((event) => event.data.text).join("")

const pieces = (count: number) => Array.from({ length: count }, (_, i) => `w${i} `)

/**
 * On the server in context, a new admin with `fake` registered starts a long answer of `model` in
 * a new conversation, and reads its `start` event and its first five deltas (their text).
 */
const answerUnderWay = (fake: FakeProvider, model: string) =>
  Effect.gen(function*() {
    const admin = yield* signUp()
    const { models } = yield* registerProvider(admin, fake)
    const conversation = expectStatus(
      yield* call("POST", "/api/v1/conversations", {
        auth: admin.accessToken,
        body: { title: "Going away", modelId: models[model] }
      }),
      201
    )
    const stream = yield* openSse("POST", `/api/v1/conversations/${conversation.id}/chat`, {
      auth: admin.accessToken,
      body: { content: "Tell me everything" }
    })
    const start = yield* stream.next
    let relayed = ""
    for (let i = 0; i < 5; i++) relayed += (yield* stream.next)!.data.text
    return {
      answerId: start!.data.answer.id as string,
      conversationId: conversation.id as string,
      relayed,
      stream,
      user: admin
    }
  })

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`chat on ${dialect}`, (it) => {
    describe("answers", () => {
      it.scoped("waits and answers JSON; the question, then the complete answer with its usage, are stored", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["Hello", ", world"], usage: { promptTokens: 11, completionTokens: 2 } })
          const { admin, modelId, other, user } = yield* TheCast
          // Event sockets, open before the chat: the owner's and two others' (one an administrator); then
          // the owner's through a chat client's key (no `models:read`: no models, but its titles) and
          // through a key that may read models but not conversations (no titles).
          const chatKey = yield* createKey(user, ["chat", "conversations:read", "conversations:write", "models:use"])
          const modelsKey = yield* createKey(user, ["models:read"])
          const sockets = yield* Effect.all(
            [user.accessToken, chatKey.secret, other.accessToken, admin.accessToken, modelsKey.secret].map((
              credential
            ) => openEvents(credential))
          )
          const snapshots = yield* Effect.forEach(
            sockets,
            (socket) => socket.next((message) => message.type === "snapshot")
          )
          expect(snapshots[1].models).toEqual([])
          expect(snapshots[4].models.length).toBeGreaterThan(0)
          const result = expectStatus(
            yield* asUser("POST", "/api/v1/chat", { content: "Say hello", modelId }),
            200
          )
          expect(result.question).toMatchObject({ role: "user", content: "Say hello", status: "complete" })
          expect(result.answer).toMatchObject({
            role: "assistant",
            content: "Hello, world",
            status: "complete",
            parentId: result.question.id,
            modelId,
            promptTokens: 11,
            completionTokens: 2
          })
          const branch = expectStatus(
            yield* asUser("GET", `/api/v1/conversations/${result.conversationId}/messages`),
            200
          )
          expect(branch.items.map((m: any) => [m.role, m.content])).toEqual([
            ["user", "Say hello"],
            ["assistant", "Hello, world"]
          ])
          expect(branch.currentLeafId).toBe(result.answer.id)
          expect(chatRequests(openai)[0]!.body).toMatchObject({
            model: "gpt-loop",
            stream: true,
            messages: [{ role: "user", content: "Say hello" }]
          })
          // A new conversation gets a title in the background, from the model.
          const conversation = yield* eventually(
            Effect.map(asUser("GET", `/api/v1/conversations/${result.conversationId}`), (reply) => reply.body),
            (body) => body.title !== ""
          )
          expect(conversation.title).toBe("Hello, world")
          // The owner's sockets are told, with nothing about whose it is; nobody else's.
          const told = yield* sockets[0]!.next((message) => message.type === "conversation.title")
          expect(told).toEqual({
            type: "conversation.title",
            conversationId: result.conversationId,
            title: "Hello, world",
            at: expect.any(String)
          })
          expect(yield* sockets[1]!.next((message) => message.type === "conversation.title")).toEqual(told)
          for (const socket of sockets.slice(2)) {
            const heard = yield* Effect.exit(
              socket.next((message) => message.type === "conversation.title", "300 millis")
            )
            expect(Exit.isFailure(heard)).toBe(true)
          }
        }))

      it.scoped("a title is a job: a model failing is tried again; failing to the end, the question names it", () =>
        Effect.gen(function*() {
          const { modelId } = yield* TheCast
          const openai = yield* script({ text: ["unused"] })
          // Answers stream as usual; title requests fail as many times as `failing` says. A job's attempt
          // calls the provider up to 4 times (CHAT_RETRY_ATTEMPTS retries of a 5xx before any chunk).
          let failing = 4
          let titleCalls = 0
          const chunk = (delta: object, finish: string | null) =>
            `data: ${
              JSON.stringify({
                id: "chatcmpl-title",
                object: "chat.completion.chunk",
                created: 0,
                model: "gpt-loop",
                choices: [{ index: 0, delta, finish_reason: finish }]
              })
            }\n\n`
          const route = `POST ${chatPath.openai}`
          const usual = openai.routes.get(route)
          openai.routes.set(route, (request, response) => {
            const title = JSON.stringify(request.body.messages).includes("Write a title")
            if (title && ++titleCalls <= failing) {
              response.writeHead(500, { "content-type": "application/json" })
              response.end(JSON.stringify({ error: { message: "overloaded" } }))
              return
            }
            response.writeHead(200, { "content-type": "text/event-stream" })
            response.end(
              chunk({ content: title ? "Trip to Kyoto" : "Go in spring." }, null) + chunk({}, "stop") +
                "data: [DONE]\n\n"
            )
          })
          try {
            const first = expectStatus(
              yield* asUser("POST", "/api/v1/chat", { content: "Plan a trip to Kyoto", modelId }),
              200
            )
            const titled = yield* eventually(
              Effect.map(asUser("GET", `/api/v1/conversations/${first.conversationId}`), (reply) => reply.body),
              (body) => body.title !== "",
              400
            )
            expect(titled.title).toBe("Trip to Kyoto")
            // The first attempt failed with its 4 calls; the job was tried again.
            expect(titleCalls).toBe(5)

            failing = Number.POSITIVE_INFINITY
            titleCalls = 0
            const second = expectStatus(
              yield* asUser("POST", "/api/v1/chat", { content: "what should I pack for the mountains", modelId }),
              200
            )
            const fallback = yield* eventually(
              Effect.map(asUser("GET", `/api/v1/conversations/${second.conversationId}`), (reply) => reply.body),
              (body) => body.title !== "",
              400
            )
            expect(fallback.title).toBe("what should I pack for the mountains")
            // JOBS_MAX_ATTEMPTS (3) attempts of 4 calls each, then the question's words.
            expect(titleCalls).toBe(12)
          } finally {
            if (usual === undefined) openai.routes.delete(route)
            else openai.routes.set(route, usual)
          }
        }))

      it.scoped("an answer asked for with an API key counts toward the key's usage", () =>
        Effect.gen(function*() {
          const { modelId, user } = yield* TheCast
          yield* script({ text: ["Counted"], usage: { promptTokens: 21, completionTokens: 4 } })
          const key = yield* createKey(user, ["chat", "conversations:read", "conversations:write", "models:use"])
          const reply = yield* call("POST", "/api/v1/chat", {
            auth: key.secret,
            body: { content: "Count me", modelId, title: "Usage" }
          })
          expect(expectStatus(reply, 200).answer.status).toBe("complete")
          const usage = expectStatus(yield* asUser("GET", `/api/v1/auth/api-keys/${key.id}/usage`), 200)
          expect(usage).toMatchObject({ requests: 1, promptTokens: 21, completionTokens: 4 })
          expect(usage.byModel).toEqual([expect.objectContaining({ source: "chat", modelId, requests: 1 })])
        }))

      it.scoped("streams SSE: start, deltas, usage and done, with consecutive event ids", () =>
        Effect.gen(function*() {
          yield* script({ text: ["One", " two", " three"], usage: { promptTokens: 5, completionTokens: 3 } })
          const conversationId = yield* newConversation
          const stream = yield* chatSse(conversationId, { content: "Count" })
          expect(stream.status).toBe(200)
          expect(stream.contentType).toContain("text/event-stream")
          const events = yield* stream.rest
          expect(events.map((event) => event.event)).toEqual(["start", "delta", "delta", "delta", "usage", "done"])
          expect(events.map((event) => Number(event.id))).toEqual([1, 2, 3, 4, 5, 6])
          const [start] = events
          expect(start!.data.question).toMatchObject({ role: "user", content: "Count" })
          expect(start!.data.answer).toMatchObject({ role: "assistant", status: "streaming", content: "" })
          const done = events.at(-1)!.data.message
          expect(done).toMatchObject({ id: start!.data.answer.id, status: "complete", content: "One two three" })
          expect(textOf(events)).toBe(done.content)
          expect(yield* getMessage(conversationId, done.id)).toMatchObject({ status: "complete", completionTokens: 3 })
        }))

      it.scoped("applies the preset: system prompt first, its parameters passed on", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["Ok"] })
          const preset = expectStatus(
            yield* asUser("POST", "/api/v1/model-configs", {
              name: uniqueName("terse"),
              systemPrompt: "Answer in one word.",
              temperature: 0.3,
              maxTokens: 50,
              stop: ["END"]
            }),
            201
          )
          const conversationId = yield* newConversation
          expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, {
              content: "Weather?",
              modelConfigId: preset.id
            }),
            200
          )
          expect(chatRequests(openai)[0]!.body).toMatchObject({
            messages: [{ role: "system", content: "Answer in one word." }, { role: "user", content: "Weather?" }],
            temperature: 0.3,
            max_tokens: 50,
            stop: ["END"]
          })
        }))

      it.scoped("sends the branch fitted to the model's context window, oldest turns dropped", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["Noted"] })
          const { smallModelId } = yield* TheCast
          const conversationId = yield* newConversation
          // Each question is about 100 tokens; the window is 400, a quarter kept for the answer.
          for (let i = 0; i < 5; i++) {
            expectStatus(
              yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, {
                content: `question ${i} ${"lorem ".repeat(65)}`,
                modelId: smallModelId
              }),
              200
            )
          }
          const sent = chatRequests(openai).at(-1)!.body.messages as Array<{ role: string; content: string }>
          expect(sent.length).toBeLessThan(9)
          expect(sent[0]!.role).toBe("user")
          expect(sent.at(-1)!.content).toMatch(/^question 4 /)
          expect(sent.map((m) => m.content)).not.toContainEqual(expect.stringMatching(/^question 0 /))
        }))

      it.scoped("reads a long branch a page at a time, only as far as the model's window reaches", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["Noted"] })
          const { smallModelId } = yield* TheCast
          // A conversation of 300 messages (three pages of the branch), imported as a chain.
          const at = new Date().toISOString()
          const messages = Array.from({ length: 300 }, (_, i) =>
            documentMessage({
              id: `m${i}`,
              parentId: i === 0 ? null : `m${i - 1}`,
              role: i % 2 === 0 ? "user" : "assistant",
              content: `message ${i}`
            }, at))
          const imported = expectStatus(
            yield* asUser(
              "POST",
              "/api/v1/conversations/import",
              conversationDocument({ title: "Long", messages, currentLeafId: "m299", at })
            ),
            201
          )
          const conversationId = imported.id as string
          const sent = () => chatRequests(openai).at(-1)!.body.messages as Array<{ role: string; content: string }>

          // Everything fits the large window: the whole branch, in order, across the pages' seams.
          expectStatus(yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "first" }), 200)
          expect(sent().map((m) => m.content)).toEqual([...messages.map((m) => m.content), "first"])

          // The small window (400 tokens, a quarter kept for the answer) holds the newest messages only.
          expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, {
              content: "second",
              modelId: smallModelId
            }),
            200
          )
          const fitted = sent()
          expect(fitted.length).toBeGreaterThan(10)
          expect(fitted.length).toBeLessThan(100)
          expect(fitted[0]!.role).toBe("user")
          expect(fitted.slice(-3).map((m) => m.content)).toEqual(["first", "Noted", "second"])
          // Consecutive, newest last: nothing skipped where it was cut.
          const numbers = fitted.slice(0, -3).map((m) => Number(m.content.split(" ")[1]))
          expect(numbers).toEqual(Array.from({ length: numbers.length }, (_, i) => 300 - numbers.length + i))
        }))

      it.scoped("streams tool calls and stores them on the answer", () =>
        Effect.gen(function*() {
          yield* script({
            text: [],
            toolCalls: [{ id: "call_1", name: "weather", arguments: ["{\"city\":", "\"Oslo\"}"] }]
          })
          const conversationId = yield* newConversation
          const events = yield* Effect.flatMap(chatSse(conversationId, { content: "Weather in Oslo?" }), (s) => s.rest)
          const calls = events.filter((event) => event.event === "tool_call").map((event) => event.data)
          expect(calls[0]).toMatchObject({ index: 0, callId: "call_1", name: "weather" })
          expect(calls.map((call) => call.arguments).join("")).toBe("{\"city\":\"Oslo\"}")
          expect(events.at(-1)!.data.message.toolCalls).toEqual([
            { id: "call_1", name: "weather", arguments: "{\"city\":\"Oslo\"}" }
          ])
        }))

      it.scoped("tools: offered to the model, its calls stored, results appended, then the answer continued", () =>
        Effect.gen(function*() {
          const openai = yield* script({
            text: [],
            toolCalls: [
              { id: "call_a", name: "weather", arguments: ["{\"city\":\"Oslo\"}"] },
              { id: "call_b", name: "weather", arguments: ["{\"city\":\"Rome\"}"] }
            ]
          })
          const conversationId = yield* newConversation
          const tools = [{
            name: "weather",
            description: "The weather in a city",
            parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
          }]
          const asked = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, {
              content: "Oslo or Rome: which is warmer?",
              tools,
              toolChoice: "auto"
            }),
            200
          )
          const sent = chatRequests(openai).at(-1)!.body
          expect(sent.tools).toEqual([{ type: "function", function: tools[0] }])
          expect(sent.tool_choice).toBe("auto")
          expect(asked.answer.toolCalls.map((call: { id: string }) => call.id)).toEqual(["call_a", "call_b"])

          const messages = `/api/v1/conversations/${conversationId}/messages`
          // A result must answer a call of the answer above it.
          const unknown = yield* asUser("POST", messages, { role: "tool", toolCallId: "call_z", content: "?" })
          expect(expectStatus(unknown, 422).issues[0].path).toEqual(["toolCallId"])
          expectStatus(yield* asUser("POST", messages, { role: "tool", content: "no id" }), 422)
          expectStatus(yield* asUser("POST", messages, { role: "user", toolCallId: "call_a", content: "x" }), 422)
          const oslo = expectStatus(
            yield* asUser("POST", messages, { role: "tool", toolCallId: "call_a", content: "12 °C" }),
            201
          )
          expect(oslo).toMatchObject({ role: "tool", parentId: asked.answer.id, metadata: { toolCallId: "call_a" } })
          expectStatus(yield* asUser("POST", messages, { role: "tool", toolCallId: "call_b", content: "21 °C" }), 201)

          openai.chat = { text: ["Rome is warmer."] }
          const continued = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/continue`, { tools }),
            200
          )
          expect(continued.answer.content).toBe("Rome is warmer.")
          const next = chatRequests(openai).at(-1)!.body
          expect(next.tools).toEqual([{ type: "function", function: tools[0] }])
          expect(next.messages).toEqual([
            { role: "user", content: "Oslo or Rome: which is warmer?" },
            {
              role: "assistant",
              content: null,
              tool_calls: [
                { id: "call_a", type: "function", function: { name: "weather", arguments: "{\"city\":\"Oslo\"}" } },
                { id: "call_b", type: "function", function: { name: "weather", arguments: "{\"city\":\"Rome\"}" } }
              ]
            },
            { role: "tool", tool_call_id: "call_a", content: "12 °C" },
            { role: "tool", tool_call_id: "call_b", content: "21 °C" }
          ])
        }))

      it.scoped("a tool choice naming no offered tool is refused before anything is stored", () =>
        Effect.gen(function*() {
          yield* script({ text: ["unused"] })
          const conversationId = yield* newConversation
          const named = yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, {
            content: "Hello",
            tools: [{ name: "weather" }],
            toolChoice: { name: "clock" }
          })
          expect(expectStatus(named, 422).issues).toEqual([
            { path: ["toolChoice", "name"], message: "No tool named \"clock\" among the tools" }
          ])
          const required = yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, {
            content: "Hello",
            toolChoice: "required"
          })
          expectStatus(required, 422)
          const stored = expectStatus(yield* asUser("GET", `/api/v1/conversations/${conversationId}/messages`), 200)
          expect(stored.items).toEqual([])
        }))

      it.scoped("speaks to Anthropic and Ollama providers the same way", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          for (const dialect of ["anthropic", "ollama"] as const) {
            const fake = yield* fakeProvider(dialect, [{ name: `${dialect}-model` }])
            fake.chat = { text: [`From `, dialect] }
            const { models, providerId } = yield* registerProvider(admin, fake)
            const conversationId = yield* newConversation
            const events = yield* Effect.flatMap(
              chatSse(conversationId, { content: "Hi", modelId: models[`${dialect}-model`] }),
              (stream) => stream.rest
            )
            expect(events.at(-1)!.data.message).toMatchObject({ status: "complete", content: `From ${dialect}` })
            expect(chatRequests(fake)).toHaveLength(1)
            // Out of the way of the tests that pick the first usable model.
            expectStatus(
              yield* call("PATCH", `/api/v1/providers/${providerId}`, {
                auth: admin.accessToken,
                body: { enabled: false }
              }),
              200
            )
          }
        }))
    })

    describe("provider faults", () => {
      it.scoped("a stream that dies midway ends the answer as error, its partial text kept", () =>
        Effect.gen(function*() {
          const openai = yield* script({
            text: ["Part", "ial", " and", " more"],
            fault: { kind: "die", afterChunks: 2 }
          })
          const conversationId = yield* newConversation
          const events = yield* Effect.flatMap(chatSse(conversationId, { content: "Go" }), (stream) => stream.rest)
          expect(events.map((event) => event.event).slice(-2)).toEqual(["error", "done"])
          expect(events.at(-2)!.data.error._tag).toMatch(/^Provider/)
          const done = events.at(-1)!.data.message
          // What arrived before the connection died is kept (the last piece may die with it).
          expect(done.status).toBe("error")
          expect(done.content.length).toBeGreaterThan(0)
          expect("Partial and more".startsWith(done.content)).toBe(true)
          expect(done.content).toBe(textOf(events))
          expect(done.metadata.error._tag).toMatch(/^Provider/)
          // Never retried once text has been sent.
          expect(chatRequests(openai)).toHaveLength(1)
        }))

      it.scoped("429 with Retry-After, then success: retried before the first chunk", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["Finally"] })
          openai.faults.set(chatPath.openai, { kind: "status", status: 429, times: 2, headers: { "retry-after": "0" } })
          const conversationId = yield* newConversation
          const result = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "Hi" }),
            200
          )
          expect(result.answer).toMatchObject({ status: "complete", content: "Finally" })
          expect(chatRequests(openai)).toHaveLength(3)
        }))

      it.scoped("429 every time: 502 with the provider's wait as Retry-After, after the retries", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["Never"] })
          openai.faults.set(chatPath.openai, {
            kind: "status",
            status: 429,
            times: 10,
            headers: { "retry-after": "7" }
          })
          const conversationId = yield* newConversation
          const reply = yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "Hi" })
          expect(reply.status).toBe(502)
          expect(reply.body).toMatchObject({ _tag: "ProviderError", upstreamStatus: 429, retryAfterMs: 7_000 })
          expect(reply.headers["retry-after"]).toBe("7")
          expect(chatRequests(openai)).toHaveLength(4)
        }))

      it.scoped("a first token slower than the timeout: 504, and the answer stored as error", () =>
        Effect.gen(function*() {
          yield* script({ text: ["Late"], firstChunkDelayMs: 1_500 })
          const conversationId = yield* newConversation
          const reply = yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "Hi" })
          expect(reply.status).toBe(504)
          expect(reply.body._tag).toBe("ProviderTimeout")
          const branch = expectStatus(yield* asUser("GET", `/api/v1/conversations/${conversationId}/messages`), 200)
          expect(branch.items.map((m: any) => [m.role, m.status])).toEqual([["user", "complete"], [
            "assistant",
            "error"
          ]])
        }))

      it.scoped("a malformed chunk: 502, partial text kept, nothing of the upstream's answer shown", () =>
        Effect.gen(function*() {
          yield* script({ text: ["Good", " bad"], fault: { kind: "malformed", afterChunks: 1 } })
          const conversationId = yield* newConversation
          const reply = yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "Hi" })
          expect(reply.status).toBe(502)
          expect(reply.body._tag).toBe("ProviderError")
          expect(JSON.stringify(reply.body)).not.toContain(upstreamSecret)
          const branch = expectStatus(yield* asUser("GET", `/api/v1/conversations/${conversationId}/messages`), 200)
          expect(branch.items.at(-1)).toMatchObject({ status: "error", content: "Good" })
        }))

      it.scoped("an unknown model is refused before anything is stored", () =>
        Effect.gen(function*() {
          const before = expectStatus(yield* asUser("GET", "/api/v1/conversations?limit=100"), 200).items.length
          const reply = yield* asUser("POST", "/api/v1/chat", {
            content: "Hi",
            modelId: "01900000-0000-7000-8000-000000000000"
          })
          expect(reply.status).toBe(422)
          expect(reply.body.issues[0].path).toEqual(["modelId"])
          expect(expectStatus(yield* asUser("GET", "/api/v1/conversations?limit=100"), 200).items).toHaveLength(before)
        }))
    })

    describe("nothing lost", () => {
      it.scoped("a client that goes away does not stop the answer: it finishes and is stored", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: pieces(12), paceMs: 25 })
          const conversationId = yield* newConversation
          const stream = yield* chatSse(conversationId, { content: "Long answer please" })
          const start = yield* stream.next
          yield* stream.next
          yield* stream.close
          const answer = yield* eventually(
            getMessage(conversationId, start!.data.answer.id),
            (message) => message.status !== "streaming"
          )
          expect(answer).toMatchObject({ status: "complete", content: pieces(12).join("") })
          expect(openai.cutShort).toBe(0)
        }))

      it.scoped("the text is flushed while it grows", () =>
        Effect.gen(function*() {
          yield* script({ text: pieces(20), paceMs: 30 })
          const conversationId = yield* newConversation
          const stream = yield* chatSse(conversationId, { content: "Go" })
          const start = yield* stream.next
          const partial = yield* eventually(
            getMessage(conversationId, start!.data.answer.id),
            (message) => message.content.length > 0
          )
          expect(partial.status).toBe("streaming")
          expect(pieces(20).join("").startsWith(partial.content)).toBe(true)
          yield* stream.rest
        }))

      it.scoped("an answer is found by search once it has ended, not while it is written", () =>
        Effect.gen(function*() {
          const words = Array.from({ length: 20 }, (_, i) => `zephyr${String.fromCharCode(97 + i)} `)
          yield* script({ text: words, paceMs: 30 })
          const conversationId = yield* newConversation
          const stream = yield* chatSse(conversationId, { content: "Go" })
          const start = yield* stream.next
          const answerId = start!.data.answer.id
          const hitsFor = (word: string) =>
            Effect.map(
              asUser("GET", `/api/v1/search?q=${word}`),
              (reply) =>
                (expectStatus(reply, 200).items as Array<{ messageId: string | null }>).map((hit) => hit.messageId)
            )
          const partial = yield* eventually(
            getMessage(conversationId, answerId),
            (message) => message.content.includes("zephyrb")
          )
          expect(partial.status).toBe("streaming")
          expect(yield* hitsFor("zephyrb")).toEqual([])
          yield* stream.rest
          expect(yield* hitsFor("zephyrb")).toEqual([answerId])
          expect(yield* hitsFor("zephyrt")).toEqual([answerId])
        }))

      it.scoped("cancel stops the answer, keeps its text, and aborts the upstream request", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: pieces(40), paceMs: 40 })
          const conversationId = yield* newConversation
          const stream = yield* chatSse(conversationId, { content: "Go on and on" })
          const start = yield* stream.next
          yield* stream.next
          yield* stream.next
          const answerId = start!.data.answer.id
          const cancelled = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/messages/${answerId}/cancel`),
            200
          )
          expect(cancelled.status).toBe("cancelled")
          expect(cancelled.content.length).toBeGreaterThan(0)
          expect(cancelled.content.length).toBeLessThan(pieces(40).join("").length)
          const rest = yield* stream.rest
          expect(rest.at(-1)).toMatchObject({ event: "done", data: { message: { status: "cancelled" } } })
          yield* eventually(Effect.sync(() => openai.cutShort), (count) => count > 0)
          // Cancelling again changes nothing.
          expect(
            expectStatus(
              yield* asUser("POST", `/api/v1/conversations/${conversationId}/messages/${answerId}/cancel`),
              200
            )
          ).toMatchObject({ status: "cancelled", content: cancelled.content })
        }))

      it.scoped("cancel before the provider's first chunk stops the call: the answer is cancelled, empty, the request aborted", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: pieces(5), firstChunkDelayMs: 800 })
          const conversationId = yield* newConversation
          const stream = yield* chatSse(conversationId, { content: "Take your time" })
          const start = yield* stream.next
          const answerId = start!.data.answer.id
          yield* eventually(Effect.sync(() => openai.requests.length), (count) => count > 0)
          const cancelled = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/messages/${answerId}/cancel`),
            200
          )
          expect(cancelled).toMatchObject({ status: "cancelled", content: "" })
          const rest = yield* stream.rest
          expect(rest.map((event) => event.event)).toEqual(["done"])
          expect(rest[0]).toMatchObject({ data: { message: { status: "cancelled", content: "" } } })
          yield* eventually(Effect.sync(() => openai.cutShort), (count) => count > 0)
          // The provider was called once: a cancelled call is not retried.
          expect(openai.requests).toHaveLength(1)
        }))

      it.scoped("a stream resumes from Last-Event-ID: the events after it, then the live ones", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          yield* script({ text: pieces(10), paceMs: 30 })
          const conversationId = yield* newConversation
          const first = yield* chatSse(conversationId, { content: "Go" })
          const seen: Array<SseEvent> = []
          while (seen.length < 3) seen.push((yield* first.next)!)
          yield* first.close
          const answerId = seen[0]!.data.answer.id
          const resumed = yield* openSse("GET", `/api/v1/conversations/${conversationId}/messages/${answerId}/events`, {
            auth: user.accessToken,
            headers: { "last-event-id": "3" }
          })
          expect(resumed.status).toBe(200)
          const rest = yield* resumed.rest
          expect(Number(rest[0]!.id)).toBe(4)
          expect(rest.map((event) => Number(event.id))).toEqual(rest.map((_, i) => i + 4))
          const done = rest.at(-1)!
          expect(done.event).toBe("done")
          expect(textOf([...seen, ...rest])).toBe(done.data.message.content)
          expect(done.data.message.content).toBe(pieces(10).join(""))
          // Once over, resuming gives the stored answer.
          const after = yield* openSse("GET", `/api/v1/conversations/${conversationId}/messages/${answerId}/events`, {
            auth: user.accessToken,
            headers: { "last-event-id": done.id! }
          })
          expect((yield* after.rest).map((event) => event.event)).toEqual(["done"])
        }))
    })

    describe("branches", () => {
      it.scoped("regenerate answers again as a sibling; continue answers an edited question", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["First"] })
          const conversationId = yield* newConversation
          const first = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "Question one" }),
            200
          )
          openai.chat = { text: ["Second"] }
          const again = expectStatus(
            yield* asUser(
              "POST",
              `/api/v1/conversations/${conversationId}/messages/${first.answer.id}/regenerate`,
              {}
            ),
            200
          )
          expect(again.question).toBeNull()
          expect(again.answer).toMatchObject({ parentId: first.question.id, content: "Second", siblingIndex: 1 })
          expect(again.answer.siblingCount).toBe(2)
          expect(chatRequests(openai).at(-1)!.body.messages).toEqual([{ role: "user", content: "Question one" }])

          const edited = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/messages/${first.question.id}/edit`, {
              content: "Question one, edited"
            }),
            201
          )
          openai.chat = { text: ["Third"] }
          const continued = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/continue`, {}),
            200
          )
          expect(continued.answer).toMatchObject({ parentId: edited.id, content: "Third" })
          expect(chatRequests(openai).at(-1)!.body.messages).toEqual([
            { role: "user", content: "Question one, edited" }
          ])
          // An answer cannot be answered, nor a question regenerated.
          expect((yield* asUser("POST", `/api/v1/conversations/${conversationId}/continue`, {})).status).toBe(422)
          expect(
            (yield* asUser("POST", `/api/v1/conversations/${conversationId}/messages/${edited.id}/regenerate`, {}))
              .status
          ).toBe(422)
        }))
    })

    describe("threads", () => {
      it.scoped("a question in a thread: the model is sent the branch up to the anchor, then the thread", () =>
        Effect.gen(function*() {
          const openai = yield* script({ text: ["Paris."] })
          const conversationId = yield* newConversation
          const first = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "Capital of France?" }),
            200
          )
          openai.chat = { text: ["Berlin."] }
          expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "And of Germany?" }),
            200
          )
          const thread = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/threads`, {
              messageId: first.answer.id,
              title: "About Paris"
            }),
            201
          )
          const threadPath = `/api/v1/conversations/${conversationId}/threads/${thread.id}`

          openai.chat = { text: ["About two million."] }
          const asked = expectStatus(yield* asUser("POST", `${threadPath}/chat`, { content: "How many people?" }), 200)
          expect(asked.question).toMatchObject({ threadId: thread.id, parentId: null, role: "user" })
          expect(asked.answer).toMatchObject({
            threadId: thread.id,
            parentId: null,
            status: "complete",
            content: "About two million."
          })
          // The branch up to the anchor (not the turn after it), then the thread.
          expect(chatRequests(openai).at(-1)!.body.messages).toEqual([
            { role: "user", content: "Capital of France?" },
            { role: "assistant", content: "Paris." },
            { role: "user", content: "How many people?" }
          ])

          // Streamed, the next one follows the thread's first turn.
          openai.chat = { text: ["Yes, ", "it is."] }
          const stream = yield* Effect.flatMap(
            TheCast,
            ({ user }) =>
              openSse("POST", `${threadPath}/chat`, { auth: user.accessToken, body: { content: "Is it big?" } })
          )
          const events = yield* stream.rest
          expect(events[0]!.data.question).toMatchObject({ threadId: thread.id, content: "Is it big?" })
          expect(events.at(-1)!.data.message).toMatchObject({ threadId: thread.id, content: "Yes, it is." })
          expect(textOf(events)).toBe("Yes, it is.")
          expect(chatRequests(openai).at(-1)!.body.messages.slice(2)).toEqual([
            { role: "user", content: "How many people?" },
            { role: "assistant", content: "About two million." },
            { role: "user", content: "Is it big?" }
          ])

          const listed = expectStatus(yield* asUser("GET", `${threadPath}/messages`), 200)
          expect(listed.items.map((message: { content: string }) => message.content)).toEqual([
            "How many people?",
            "About two million.",
            "Is it big?",
            "Yes, it is."
          ])
          // The conversation's branch is as it was: the thread's turns are not on it.
          const branch = expectStatus(
            yield* asUser("GET", `/api/v1/conversations/${conversationId}/messages?view=active`),
            200
          )
          expect(branch.items.map((message: { content: string }) => message.content)).toEqual([
            "Capital of France?",
            "Paris.",
            "And of Germany?",
            "Berlin."
          ])
        }))

      it.scoped("another user's thread or an unknown one: 404; a refused model stores nothing", () =>
        Effect.gen(function*() {
          const { other } = yield* TheCast
          yield* script({ text: ["Fine."] })
          const conversationId = yield* newConversation
          const first = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: "Hello" }),
            200
          )
          const thread = expectStatus(
            yield* asUser("POST", `/api/v1/conversations/${conversationId}/threads`, { messageId: first.question.id }),
            201
          )
          const threadPath = `/api/v1/conversations/${conversationId}/threads/${thread.id}`
          const theirs = yield* call("POST", `${threadPath}/chat`, {
            auth: other.accessToken,
            body: { content: "Mine?" }
          })
          expectStatus(theirs, 404)
          expectStatus(
            yield* asUser(
              "POST",
              `/api/v1/conversations/${conversationId}/threads/018f0000-0000-7000-8000-000000000000/chat`,
              { content: "Nowhere" }
            ),
            404
          )
          const refused = yield* asUser("POST", `${threadPath}/chat`, {
            content: "With a model that is not there",
            modelId: "018f0000-0000-7000-8000-000000000000"
          })
          expect(refused.status).toBeGreaterThanOrEqual(400)
          expect(refused.status).toBeLessThan(500)
          expect(expectStatus(yield* asUser("GET", `${threadPath}/messages`), 200).items).toEqual([])
        }))
    })

    describe("POST /api/{user_id}/chat", () => {
      it.scoped("answers { conversation_id, response, tool_calls }, and continues a conversation", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          yield* script({ text: ["Hi ", "there"] })
          const first = expectStatus(yield* asUser("POST", `/api/${user.id}/chat`, { message: "Hello" }), 200)
          expect(first).toEqual({ conversation_id: expect.any(String), response: "Hi there", tool_calls: [] })
          const second = expectStatus(
            yield* asUser("POST", `/api/${user.id}/chat`, { message: "Again", conversation_id: first.conversation_id }),
            200
          )
          expect(second.conversation_id).toBe(first.conversation_id)
          const branch = expectStatus(
            yield* asUser("GET", `/api/v1/conversations/${first.conversation_id}/messages`),
            200
          )
          expect(branch.items.map((m: any) => m.content)).toEqual(["Hello", "Hi there", "Again", "Hi there"])
        }))

      it.scoped("401 without credentials, 403 for another user's path, 404 for another's conversation, 422 (a path naming no user too)", () =>
        Effect.gen(function*() {
          const { other, user } = yield* TheCast
          yield* script({ text: ["x"] })
          expect((yield* call("POST", `/api/${user.id}/chat`, { body: { message: "Hi" } })).status).toBe(401)
          const forbidden = yield* call("POST", `/api/${user.id}/chat`, {
            auth: other.accessToken,
            body: { message: "Hi" }
          })
          expect([forbidden.status, forbidden.body._tag]).toEqual([403, "Forbidden"])
          // A path that names no user at all is bad input, once the caller is known.
          expect((yield* call("POST", "/api/not-a-user/chat", { body: { message: "Hi" } })).status).toBe(401)
          const malformed = yield* asUser("POST", "/api/not-a-user/chat", { message: "Hi" })
          expect([malformed.status, malformed.body._tag, malformed.body.issues[0].path]).toEqual([
            422,
            "ValidationError",
            ["userId"]
          ])
          const conversationId = yield* newConversation
          const notFound = yield* call("POST", `/api/${other.id}/chat`, {
            auth: other.accessToken,
            body: { message: "Hi", conversation_id: conversationId }
          })
          expect([notFound.status, notFound.body._tag]).toEqual([404, "NotFound"])
          for (const message of ["", "x".repeat(200_001)]) {
            const invalid = yield* asUser("POST", `/api/${user.id}/chat`, { message })
            expect([invalid.status, invalid.body._tag]).toEqual([422, "ValidationError"])
            expect(invalid.body.issues[0].path).toEqual(["message"])
          }
          const missing = yield* asUser("POST", `/api/${user.id}/chat`, {})
          expect(missing.status).toBe(422)
        }))
    })

    describe("stateless", () => {
      it.scoped("two instances take turns on one conversation", () =>
        Effect.gen(function*() {
          const { dataDir, databaseUrl } = yield* TestServer
          const openai = yield* script({ text: ["Reply"] })
          const conversationId = yield* newConversation
          const second = yield* Layer.build(testServer({
            dialect,
            env: { ...chatEnv, DATA_DIR: dataDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) }
          }))
          const onSecond = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, second)
          for (let turn = 0; turn < 4; turn++) {
            openai.chat = { text: [`Reply ${turn}`] }
            const send = asUser("POST", `/api/v1/conversations/${conversationId}/chat`, { content: `Turn ${turn}` })
            expectStatus(yield* (turn % 2 === 0 ? send : onSecond(send)), 200)
          }
          const branch = expectStatus(yield* asUser("GET", `/api/v1/conversations/${conversationId}/messages`), 200)
          expect(branch.items.map((m: any) => m.content)).toEqual([
            "Turn 0",
            "Reply 0",
            "Turn 1",
            "Reply 1",
            "Turn 2",
            "Reply 2",
            "Turn 3",
            "Reply 3"
          ])
          // Each instance sent the whole history it read from the database.
          expect(chatRequests(openai).at(-1)!.body.messages.map((m: any) => m.content)).toEqual(
            branch.items.slice(0, 7).map((m: any) => m.content)
          )
        }))

      it.scoped("with Redis, an answer written by one instance is followed through another with its own events", () =>
        Effect.gen(function*() {
          const { dataDir, databaseUrl } = yield* TestServer
          const { user } = yield* TheCast
          yield* script({ text: pieces(40), paceMs: 25 })
          const conversationId = yield* newConversation
          const env = {
            ...chatEnv,
            DATA_DIR: dataDir,
            ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
            REDIS_URL: redisUrl,
            REDIS_KEY_PREFIX: yield* redisPrefix
          }
          const writer = yield* startTestServer(testServer({ env }))
          const follower = yield* startTestServer(testServer({ env }))
          const stream = yield* chatSse(conversationId, { content: "Go" }).pipe(
            Effect.provideService(TestServer, writer)
          )
          const seen = [yield* stream.next, yield* stream.next, yield* stream.next, yield* stream.next]
          expect(seen.map((event) => [event!.id, event!.event])).toEqual([
            ["1", "start"],
            ["2", "delta"],
            ["3", "delta"],
            ["4", "delta"]
          ])
          const answerId = seen[0]!.data.answer.id
          // The client comes back on the other instance: the writer's own events from the 5th on, not snapshots.
          const followed = yield* openSse(
            "GET",
            `/api/v1/conversations/${conversationId}/messages/${answerId}/events`,
            { auth: user.accessToken, headers: { "last-event-id": "4" } }
          ).pipe(Effect.provideService(TestServer, follower))
          const rest = yield* followed.rest
          expect(rest.map((event) => Number(event.id))).toEqual(rest.map((_, index) => index + 5))
          expect(new Set(rest.map((event) => event.event))).toEqual(new Set(["delta", "usage", "done"]))
          expect(rest.at(-1)).toMatchObject({ event: "done", data: { message: { status: "complete" } } })
          expect(textOf(seen as Array<SseEvent>) + textOf(rest)).toBe(pieces(40).join(""))
          expect((yield* stream.rest).at(-1)?.event).toBe("done")
          // A bogus id beyond the answer's counts as everything so far: the end again.
          const again = yield* openSse(
            "GET",
            `/api/v1/conversations/${conversationId}/messages/${answerId}/events`,
            { auth: user.accessToken, headers: { "last-event-id": "9999" } }
          ).pipe(Effect.provideService(TestServer, follower))
          expect((yield* again.rest).map((event) => event.event)).toEqual(["done"])
        }))

      it.scoped("an answer written by one instance is followed and cancelled through another", () =>
        Effect.gen(function*() {
          const { dataDir, databaseUrl } = yield* TestServer
          const { user } = yield* TheCast
          const openai = yield* script({ text: pieces(60), paceMs: 30 })
          const conversationId = yield* newConversation
          const second = yield* Layer.build(testServer({
            dialect,
            env: { ...chatEnv, DATA_DIR: dataDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) }
          }))
          const stream = yield* chatSse(conversationId, { content: "Go" })
          const start = yield* stream.next
          const answerId = start!.data.answer.id
          // The other instance reads the answer from the database: snapshots of the text so far.
          const followed = yield* openSse(
            "GET",
            `/api/v1/conversations/${conversationId}/messages/${answerId}/events`,
            {
              auth: user.accessToken,
              headers: { "last-event-id": "1" }
            }
          ).pipe(Effect.provide(second))
          const snapshot = yield* eventually(followed.next, (event) => event?.event === "snapshot")
          expect(pieces(60).join("").startsWith(snapshot!.data.content)).toBe(true)
          const cancelled = yield* call(
            "POST",
            `/api/v1/conversations/${conversationId}/messages/${answerId}/cancel`,
            { auth: user.accessToken }
          ).pipe(Effect.provide(second))
          expect(cancelled.body.status).toBe("cancelled")
          // The writing instance stops at its next flush, and both streams end on the cancelled answer.
          const ends = [(yield* stream.rest).at(-1), (yield* followed.rest).at(-1)]
          for (const end of ends) {
            expect(end).toMatchObject({ event: "done", data: { message: { status: "cancelled" } } })
          }
          const stored = yield* getMessage(conversationId, answerId)
          expect(stored.status).toBe("cancelled")
          expect(stored.content.length).toBeLessThan(pieces(60).join("").length)
          yield* eventually(Effect.sync(() => openai.cutShort), (count) => count > 0)
        }))
    })
  })

  describe(`an instance stopping on ${dialect}`, () => {
    layer(testServer({ dialect }), { excludeTestServices: true })((it) => {
      it.scoped("ends the answers it is writing as incomplete, with their text so far", () =>
        Effect.gen(function*() {
          const { dataDir, databaseUrl } = yield* TestServer
          const openai = yield* fakeProvider("openai", [{ name: "gpt-stop" }])
          openai.chat = { text: pieces(200), paceMs: 20 }
          const instanceScope = yield* Scope.make()
          const instance = yield* Layer.buildWithScope(
            testServer({
              dialect,
              env: { ...chatEnv, DATA_DIR: dataDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) }
            }),
            instanceScope
          )
          const { answerId, conversationId, relayed, stream, user } = yield* answerUnderWay(openai, "gpt-stop").pipe(
            Effect.provide(instance)
          )
          // The client goes away (a shutdown would wait for its request), the answer goes on.
          yield* stream.close

          yield* Scope.close(instanceScope, Exit.void)
          const stored = expectStatus(
            yield* call("GET", `/api/v1/conversations/${conversationId}/messages/${answerId}`, {
              auth: user.accessToken
            }),
            200
          )
          expect(stored.status).toBe("incomplete")
          expect(stored.content.startsWith(relayed)).toBe(true)
          expect(pieces(200).join("").startsWith(stored.content)).toBe(true)
          yield* eventually(Effect.sync(() => openai.cutShort), (count) => count > 0)
        }))
    })
  })

  describe(`a killed instance on ${dialect}`, () => {
    layer(testServer({ dialect }), { excludeTestServices: true })((it) => {
      it.scoped("leaves its answer streaming with the text flushed so far; the next start marks it incomplete", () =>
        Effect.gen(function*() {
          // The database of this layer's server, served by a child process that gets killed.
          const { dataDir, databaseUrl } = yield* TestServer
          const port = yield* freePort
          const { env } = yield* testEnvironment({ dialect })
          const child = spawnEntry("server", {
            ...env,
            ...chatEnv,
            PORT: String(port),
            DATA_DIR: dataDir,
            ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {})
          })
          collect(child)
          yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))
          const childServer = Layer.effect(
            TestServer,
            Effect.map(HttpClient.HttpClient, (client) => ({
              baseUrl: `http://127.0.0.1:${port}`,
              dataDir,
              databaseUrl,
              client: client.pipe(HttpClient.mapRequest(HttpClientRequest.prependUrl(`http://127.0.0.1:${port}`)))
            }))
          ).pipe(Layer.provide(FetchHttpClient.layer))
          const openai = yield* fakeProvider("openai", [{ name: "gpt-loop" }])
          openai.chat = { text: pieces(200), paceMs: 20 }

          const { answerId, conversationId, user } = yield* Effect.gen(function*() {
            yield* eventually(
              call("GET", "/health/ready").pipe(
                Effect.map((reply) => reply.status),
                Effect.catchAllDefect(() => Effect.succeed(0))
              ),
              (status) => status === 200,
              1_200
            )
            return yield* answerUnderWay(openai, "gpt-loop")
          }).pipe(Effect.provide(childServer))

          // Let a flush happen, then kill the instance mid-answer.
          yield* Effect.sleep("200 millis")
          child.kill("SIGKILL")
          yield* Effect.async<void>((resume) => {
            if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
            child.once("exit", () => resume(Effect.void))
          })
          const database = databaseUrl ? pgClientFor(databaseUrl) : sqliteClientFor(dataDir)
          const stored = yield* Effect.flatMap(
            SqlClient.SqlClient,
            (sql) =>
              sql<{ status: string; content: string }>`SELECT status, content FROM messages WHERE id = ${answerId}`
          ).pipe(Effect.provide(database), Effect.orDie)
          expect(stored[0]!.status).toBe("streaming")
          expect(stored[0]!.content.length).toBeGreaterThan(0)
          expect(pieces(200).join("").startsWith(stored[0]!.content)).toBe(true)

          // An instance starting once the lease has run out recovers it.
          yield* Effect.sleep("300 millis")
          const restarted = yield* Layer.build(testServer({
            dialect,
            env: {
              ...chatEnv,
              CHAT_STREAM_LEASE: "250 millis",
              DATA_DIR: dataDir,
              ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {})
            }
          }))
          const recovered = yield* call("GET", `/api/v1/conversations/${conversationId}/messages/${answerId}`, {
            auth: user.accessToken
          }).pipe(Effect.provide(restarted))
          expect(recovered.body).toMatchObject({ status: "incomplete", content: stored[0]!.content })
        }))
    })
  })
}

/** A port nothing listens on now, for a child server. */
const freePort = Effect.async<number>((resume) => {
  const server = Http.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as Net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

// --- titles a stopped instance left behind

for (const dialect of dialects) {
  describe(`titles left behind on ${dialect}`, () => {
    it.scoped("an untitled conversation whose title job was lost gets one when an instance starts", () =>
      Effect.gen(function*() {
        const env = { DEVELOPMENT_MODEL: "true" }
        const first = yield* startTestServer(testServer({ dialect, env }))
        const titleOf = (conversationId: string, auth: string) =>
          Effect.map(call("GET", `/api/v1/conversations/${conversationId}`, { auth }), (reply) => reply.body.title)
        const { conversationId, user } = yield* Effect.gen(function*() {
          const user = yield* signUp()
          const chatted = expectStatus(
            yield* call("POST", "/api/v1/chat", {
              auth: user.accessToken,
              body: { content: "Where do herons nest?" }
            }),
            200
          )
          const conversationId = chatted.conversationId as string
          yield* eventually(titleOf(conversationId, user.accessToken), (title) => title !== "")
          // As if the instance had stopped between the answer's end and the title's job: neither is there.
          yield* inServerDatabase(Effect.flatMap(SqlClient.SqlClient, (sql) =>
            Effect.all([
              sql`UPDATE conversations SET title = '' WHERE id = ${conversationId}`,
              sql`DELETE FROM job_queue WHERE queue_name = ${titleQueue}`
            ])))
          expect(yield* titleOf(conversationId, user.accessToken)).toBe("")
          return { conversationId, user }
        }).pipe(Effect.provideService(TestServer, first))

        // Another instance starting on the same data queues it again.
        yield* startTestServer(testServer({
          dialect,
          env: { ...env, DATA_DIR: first.dataDir, ...(first.databaseUrl ? { DATABASE_URL: first.databaseUrl } : {}) }
        }))
        const title = yield* eventually(titleOf(conversationId, user.accessToken), (title) => title !== "").pipe(
          Effect.provideService(TestServer, first)
        )
        expect(title.length).toBeGreaterThan(0)
      }))
  })
}

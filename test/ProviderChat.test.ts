/**
 * Streamed chat through `ProviderClients`, against loopback providers that
 * speak OpenAI's, Anthropic's and Ollama's real wire formats: the answer as
 * typed chunks, what is sent upstream, and what the shared resilience does
 * (retries only before the first chunk, timeouts, the circuit breaker,
 * aborting the upstream request), plus the development model.
 */
import { FetchHttpClient } from "@effect/platform"
import { describe, expect, it, layer } from "@effect/vitest"
import { Cause, ConfigProvider, Effect, Exit, Layer, Option, Redacted, Stream } from "effect"
import { AppConfig } from "../src/Config.js"
import type { ProviderFailure } from "../src/Models/Errors.js"
import { ProviderClients } from "../src/Providers.js"
import type { ChatChunk, ChatRequest } from "../src/Providers/Chat.js"
import type { AnswerFeed, ProviderConnection } from "../src/Providers/Client.js"
import { developmentBaseUrl } from "../src/Providers/Development.js"
import { call, signUp, type TestUser } from "./fixtures/Auth.js"
import { freshDirectory } from "./fixtures/Database.js"
import {
  chatPath,
  chatRequests,
  type FakeProvider,
  fakeProvider,
  type ProviderDialect,
  unreachableUrl,
  upstreamSecret
} from "./fixtures/Providers.js"
import { testServer } from "./fixtures/Server.js"

const ClientsLive = ProviderClients.Default.pipe(
  Layer.provide(FetchHttpClient.layer),
  Layer.provide(AppConfig.Default),
  Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(
    new Map([
      ["NODE_ENV", "test"],
      ["CHAT_FIRST_CHUNK_TIMEOUT", "400 millis"],
      ["CHAT_IDLE_TIMEOUT", "200 millis"],
      ["CHAT_RETRY_ATTEMPTS", "3"],
      ["CHAT_RETRY_BASE_DELAY", "10 millis"],
      ["CHAT_RETRY_MAX_DELAY", "1500 millis"],
      ["PROVIDER_BREAKER_THRESHOLD", "3"],
      ["PROVIDER_BREAKER_COOLDOWN", "300 millis"]
    ])
  )))
)

const dialects: ReadonlyArray<ProviderDialect> = ["openai", "anthropic", "ollama"]

const connectionTo = (fake: FakeProvider): ProviderConnection => ({
  name: `Loopback ${fake.dialect}`,
  kind: fake.dialect,
  baseUrl: fake.url,
  credential: fake.dialect === "ollama" ? Option.none() : Option.some(Redacted.make(fake.apiKey)),
  connectTimeoutMs: 1_000,
  requestTimeoutMs: 5_000
})

const question: ChatRequest = {
  model: "loopback-model",
  messages: [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Weather in Oslo?" }
  ]
}

const chat = (connection: ProviderConnection, request: ChatRequest = question) =>
  Effect.flatMap(
    ProviderClients,
    (clients) => Effect.map(Stream.runCollect(clients.forConnection(connection).chat(request)), (chunks) => [...chunks])
  )

const failure = (connection: ProviderConnection, request: ChatRequest = question) =>
  Effect.flip(chat(connection, request))

/** Listens to `feed` (as the chat engine does) from a fiber that waits for the answer's end. */
const relay = (feed: AnswerFeed, onChunks: (chunks: ReadonlyArray<ChatChunk>) => void) =>
  Effect.async<void, ProviderFailure>((resume) => Effect.sync(feed.listen(onChunks, resume)))

/** The answer read as the chat engine reads it (`listen`): every chunk handed over from the socket's callback. */
const relayed = (connection: ProviderConnection, request: ChatRequest = question) =>
  Effect.flatMap(ProviderClients, (clients) =>
    Effect.scoped(Effect.gen(function*() {
      const received: Array<ChatChunk> = []
      const feed = yield* clients.forConnection(connection).answer(request)
      const exit = yield* Effect.either(relay(feed, (chunks) => void received.push(...chunks)))
      return { received, failure: exit._tag === "Left" ? exit.left : null }
    })))

/** The answer the chunks add up to. */
const assemble = (chunks: ReadonlyArray<ChatChunk>) => {
  const toolCalls: Array<{ id?: string | undefined; name?: string | undefined; arguments: string }> = []
  let text = ""
  for (const chunk of chunks) {
    if (chunk._tag === "text") text += chunk.text
    if (chunk._tag === "tool-call") {
      const call = toolCalls[chunk.index] ?? { arguments: "" }
      toolCalls[chunk.index] = {
        id: call.id ?? chunk.id,
        name: call.name ?? chunk.name,
        arguments: call.arguments + chunk.arguments
      }
    }
  }
  return {
    text,
    toolCalls,
    usage: chunks.filter((chunk) => chunk._tag === "usage"),
    last: chunks.at(-1)
  }
}

/** An error as a client would see it must not carry upstream bodies or credentials. */
const expectClean = (error: ProviderFailure, fake: FakeProvider) => {
  expect(JSON.stringify(error)).not.toContain(upstreamSecret)
  expect(JSON.stringify(error)).not.toContain(fake.apiKey)
  expect(error.message).not.toContain(upstreamSecret)
}

const waitFor = (condition: () => boolean) =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 100 && !condition(); attempt++) yield* Effect.sleep("20 millis")
    return condition()
  })

layer(ClientsLive, { excludeTestServices: true })("provider chat", (it) => {
  for (const dialect of dialects) {
    describe(dialect, () => {
      it.scoped("streams text, tool calls, usage and the finish reason", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider(dialect)
          fake.chat = {
            text: ["Let me ", "check."],
            toolCalls: [{ id: "call_1", name: "weather", arguments: ["{\"city\":", "\"Oslo\"}"] }],
            usage: { promptTokens: 12, completionTokens: 5 }
          }
          const answer = assemble(
            yield* chat(connectionTo(fake), {
              ...question,
              temperature: 0.5,
              maxTokens: 100,
              stop: ["END"],
              tools: [{ name: "weather", description: "The weather", parameters: { type: "object" } }],
              toolChoice: "auto"
            })
          )
          expect(answer.text).toBe("Let me check.")
          expect(answer.toolCalls).toEqual([{
            id: dialect === "ollama" ? expect.stringMatching(/^call_[\w-]{12}_0$/) : "call_1",
            name: "weather",
            arguments: "{\"city\":\"Oslo\"}"
          }])
          expect(answer.usage).toEqual([{ _tag: "usage", promptTokens: 12, completionTokens: 5 }])
          expect(answer.last).toEqual({ _tag: "finish", reason: "tool_calls" })
          expect(chatRequests(fake)).toHaveLength(1)
        }))

      it.scoped("passes on a conversation with tool results", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider(dialect)
          fake.chat = { text: ["Sunny."] }
          const answer = assemble(
            yield* chat(connectionTo(fake), {
              ...question,
              messages: [
                ...question.messages,
                {
                  role: "assistant",
                  content: "",
                  toolCalls: [{ id: "call_1", name: "weather", arguments: "{\"city\":\"Oslo\"}" }]
                },
                { role: "tool", content: "{\"sky\":\"clear\"}", toolCallId: "call_1" }
              ]
            })
          )
          expect(answer.text).toBe("Sunny.")
          expect(answer.last).toEqual({ _tag: "finish", reason: "stop" })
          const body = chatRequests(fake)[0]?.body
          expect(body).toMatchObject({ model: "loopback-model", stream: true })
          if (dialect === "openai") {
            expect(body.messages).toEqual([
              { role: "system", content: "Be brief." },
              { role: "user", content: "Weather in Oslo?" },
              {
                role: "assistant",
                content: null,
                tool_calls: [{
                  id: "call_1",
                  type: "function",
                  function: { name: "weather", arguments: "{\"city\":\"Oslo\"}" }
                }]
              },
              { role: "tool", tool_call_id: "call_1", content: "{\"sky\":\"clear\"}" }
            ])
          }
          if (dialect === "anthropic") {
            expect(body.system).toBe("Be brief.")
            expect(body.max_tokens).toBe(4096)
            expect(body.messages).toEqual([
              { role: "user", content: "Weather in Oslo?" },
              {
                role: "assistant",
                content: [{ type: "tool_use", id: "call_1", name: "weather", input: { city: "Oslo" } }]
              },
              {
                role: "user",
                content: [{ type: "tool_result", tool_use_id: "call_1", content: "{\"sky\":\"clear\"}" }]
              }
            ])
          }
          if (dialect === "ollama") {
            expect(body.messages).toEqual([
              { role: "system", content: "Be brief." },
              { role: "user", content: "Weather in Oslo?" },
              {
                role: "assistant",
                content: "",
                tool_calls: [{ function: { name: "weather", arguments: { city: "Oslo" } } }]
              },
              { role: "tool", content: "{\"sky\":\"clear\"}", tool_name: "weather" }
            ])
          }
        }))

      if (dialect === "ollama") {
        it.scoped("gives each answer's tool calls ids of their own, and maps results to the call before them", () =>
          Effect.gen(function*() {
            const fake = yield* fakeProvider(dialect)
            fake.chat = { toolCalls: [{ id: "unsent", name: "weather", arguments: ["{}"] }] }
            const first = assemble(yield* chat(connectionTo(fake), question))
            const second = assemble(yield* chat(connectionTo(fake), question))
            expect(first.toolCalls[0]?.id).not.toBe(second.toolCalls[0]?.id)

            // Answers stored before ids were unique each numbered their calls from `call_0`.
            fake.chat = { text: ["Done."] }
            yield* chat(connectionTo(fake), {
              ...question,
              messages: [
                ...question.messages,
                { role: "assistant", content: "", toolCalls: [{ id: "call_0", name: "weather", arguments: "{}" }] },
                { role: "tool", content: "sunny", toolCallId: "call_0" },
                { role: "assistant", content: "", toolCalls: [{ id: "call_0", name: "time", arguments: "{}" }] },
                { role: "tool", content: "noon", toolCallId: "call_0" }
              ]
            })
            const sent = chatRequests(fake).at(-1)?.body.messages as ReadonlyArray<Record<string, unknown>>
            expect(sent.filter((message) => message.role === "tool")).toEqual([
              { role: "tool", content: "sunny", tool_name: "weather" },
              { role: "tool", content: "noon", tool_name: "time" }
            ])
          }))
      }

      it.scoped("shows a question's images in the provider's own format", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider(dialect)
          fake.chat = { text: ["A red dot."] }
          const image = { mediaType: "image/png", data: "iVBORw0KGgo=" }
          const answer = assemble(
            yield* chat(connectionTo(fake), {
              model: "loopback-model",
              messages: [{ role: "user", content: "What is this?", images: [image] }]
            })
          )
          expect(answer.text).toBe("A red dot.")
          const sent = chatRequests(fake)[0]?.body.messages
          if (dialect === "openai") {
            expect(sent).toEqual([{
              role: "user",
              content: [
                { type: "text", text: "What is this?" },
                { type: "image_url", image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } }
              ]
            }])
          }
          if (dialect === "anthropic") {
            expect(sent).toEqual([{
              role: "user",
              content: [
                { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
                { type: "text", text: "What is this?" }
              ]
            }])
          }
          if (dialect === "ollama") {
            expect(sent).toEqual([{ role: "user", content: "What is this?", images: ["iVBORw0KGgo="] }])
          }
        }))

      it.scoped("relayed as the engine reads it: the same chunks as pulled, and a failure after those received", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider(dialect)
          fake.chat = { text: ["one", " two", " three"], paceMs: 20, usage: { promptTokens: 3, completionTokens: 3 } }
          const pulled = yield* chat(connectionTo(fake))
          const whole = yield* relayed(connectionTo(fake))
          expect(whole.failure).toBeNull()
          expect(whole.received).toEqual(pulled)
          expect(assemble(whole.received).text).toBe("one two three")

          // Cut off after its second piece (which the dying provider never flushes).
          fake.chat = { text: ["one", " two", " three"], paceMs: 20, fault: { kind: "die", afterChunks: 2 } }
          const cut = yield* relayed(connectionTo(fake))
          expect(cut.failure?._tag).toBe("ProviderError")
          expect(assemble(cut.received).text).toMatch(/^one( two)?$/)

          fake.chat = { text: ["one", " two"], fault: { kind: "stall", afterChunks: 1, ms: 1_000 } }
          const stalled = yield* relayed(connectionTo(fake))
          expect(stalled.failure).toMatchObject({ _tag: "ProviderTimeout", timeoutMs: 200 })
          expect(assemble(stalled.received).text).toBe("one")
          expect(chatRequests(fake)).toHaveLength(4)

          // A reader that throws (a bug of the server's) ends the relay as a defect, not the process.
          fake.chat = { text: ["one", " two", " three"], paceMs: 20 }
          let calls = 0
          const broken = yield* Effect.flatMap(
            ProviderClients,
            (clients) =>
              Effect.scoped(
                Effect.flatMap(clients.forConnection(connectionTo(fake)).answer(question), (feed) =>
                  Effect.exit(relay(feed, () => {
                    if (++calls > 1) {
                      throw new Error("a bug in the reader")
                    }
                  })))
              )
          )
          expect(Exit.isFailure(broken) && Cause.isDie(broken.cause)).toBe(true)
          expect(calls).toBe(2)
        }))

      it.scoped("does not retry once a chunk was emitted: a stream that dies midway fails", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider(dialect)
          fake.chat = { text: ["one", " two", " three"], fault: { kind: "die", afterChunks: 1 } }
          const error = yield* failure(connectionTo(fake))
          expect(error._tag).toBe("ProviderError")
          expect(chatRequests(fake)).toHaveLength(1)
        }))

      it.scoped("fails on a malformed chunk, and on an error reported in the stream, without its details", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider(dialect)
          fake.chat = { text: ["one", " two"], fault: { kind: "malformed", afterChunks: 1 } }
          const malformed = yield* failure(connectionTo(fake))
          expect(malformed).toMatchObject({ _tag: "ProviderError", upstreamStatus: null })
          fake.chat = { text: ["one", " two"], fault: { kind: "error-event", afterChunks: 1 } }
          const reported = yield* failure(connectionTo(fake))
          expect(reported._tag).toBe("ProviderError")
          expect(reported.message).toContain("reported an error")
          expectClean(reported, fake)
          expect(chatRequests(fake)).toHaveLength(2)
        }))

      it.scoped("interrupting the stream closes the upstream connection", () =>
        Effect.gen(function*() {
          const fake = yield* fakeProvider(dialect)
          fake.chat = { text: Array.from({ length: 50 }, (_, i) => ` word${i}`), paceMs: 30 }
          const clients = yield* ProviderClients
          const taken = yield* Stream.runCollect(
            Stream.take(clients.forConnection(connectionTo(fake)).chat(question), 2)
          )
          expect(taken.length).toBe(2)
          expect(yield* waitFor(() => fake.cutShort === 1)).toBe(true)
        }))
    })
  }

  it.scoped("an Anthropic answer stopped by one of the stop sequences says which", () =>
    Effect.gen(function*() {
      const fake = yield* fakeProvider("anthropic")
      fake.chat = { text: ["One, two"], stopSequence: "three" }
      const answer = assemble(yield* chat(connectionTo(fake), { ...question, stop: ["three", "four"] }))
      expect(answer.text).toBe("One, two")
      expect(answer.last).toEqual({ _tag: "finish", reason: "stop", stopSequence: "three" })
      expect(chatRequests(fake)[0]?.body.stop_sequences).toEqual(["three", "four"])
      // Stopped otherwise: no sequence.
      fake.chat = { text: ["Done"] }
      expect(assemble(yield* chat(connectionTo(fake))).last).toEqual({ _tag: "finish", reason: "stop" })
    }))

  describe("retries before the first chunk", () => {
    it.scoped("on 429, honouring Retry-After in seconds", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("openai")
        fake.faults.set(chatPath.openai, { kind: "status", status: 429, times: 1, headers: { "retry-after": "1" } })
        const started = Date.now()
        const answer = assemble(yield* chat(connectionTo(fake)))
        expect(Date.now() - started).toBeGreaterThanOrEqual(950)
        expect(answer.text).toBe("Hello from the loopback")
        expect(chatRequests(fake)).toHaveLength(2)
      }))

    it.scoped("on 429 with Retry-After as an HTTP date, waiting no longer than the maximum delay", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("anthropic")
        const inAnHour = new Date(Date.now() + 3_600_000).toUTCString()
        fake.faults.set(chatPath.anthropic, {
          kind: "status",
          status: 429,
          times: 1,
          headers: { "retry-after": inAnHour }
        })
        const started = Date.now()
        expect(assemble(yield* chat(connectionTo(fake))).text).toBe("Hello from the loopback")
        const waited = Date.now() - started
        expect(waited).toBeGreaterThanOrEqual(1_450)
        expect(waited).toBeLessThan(3_000)
      }))

    it.scoped("on 5xx, with backoff, then answers", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("ollama")
        fake.faults.set(chatPath.ollama, { kind: "status", status: 503, times: 2 })
        expect(assemble(yield* chat(connectionTo(fake))).text).toBe("Hello from the loopback")
        expect(chatRequests(fake)).toHaveLength(3)
      }))

    it.scoped("gives up after the configured attempts, with the last status", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("openai")
        fake.faults.set(chatPath.openai, { kind: "status", status: 500 })
        const error = yield* failure(connectionTo(fake))
        expect(error).toMatchObject({ _tag: "ProviderError", upstreamStatus: 500 })
        expectClean(error, fake)
        expect(chatRequests(fake)).toHaveLength(4)
      }))

    it.scoped("on a refused connection", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("openai")
        const error = yield* failure({ ...connectionTo(fake), baseUrl: yield* unreachableUrl })
        expect(error._tag).toBe("ProviderUnreachable")
      }))

    it.scoped("on Anthropic's overloaded error event before any content, as on HTTP 529", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("anthropic")
        fake.chat = { text: ["never"], fault: { kind: "error-event", afterChunks: 0 } }
        const error = yield* failure(connectionTo(fake))
        expect(error).toMatchObject({ _tag: "ProviderError", upstreamStatus: 529 })
        expectClean(error, fake)
        expect(chatRequests(fake)).toHaveLength(4)
      }))

    it.scoped("not when the provider does not answer within the connect timeout", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("openai")
        fake.faults.set(chatPath.openai, { kind: "hang" })
        const error = yield* failure({ ...connectionTo(fake), connectTimeoutMs: 100 })
        expect(error).toMatchObject({ _tag: "ProviderTimeout", timeoutMs: 100 })
        expect(chatRequests(fake)).toHaveLength(1)
      }))

    it.scoped("never on other 4xx", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("anthropic")
        fake.faults.set(chatPath.anthropic, { kind: "status", status: 400 })
        const error = yield* failure(connectionTo(fake))
        expect(error).toMatchObject({ _tag: "ProviderError", upstreamStatus: 400 })
        expectClean(error, fake)
        fake.faults.delete(chatPath.anthropic)
        const rejected = yield* failure({ ...connectionTo(fake), credential: Option.some(Redacted.make("sk-wrong")) })
        expect(rejected).toMatchObject({ _tag: "ProviderError", upstreamStatus: 401 })
        expect(chatRequests(fake)).toHaveLength(2)
      }))
  })

  describe("timeouts", () => {
    it.scoped("a first chunk that does not come in time fails the stream and aborts the request", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("ollama")
        fake.chat = { text: ["late"], firstChunkDelayMs: 1_000 }
        const error = yield* failure(connectionTo(fake))
        expect(error).toMatchObject({ _tag: "ProviderTimeout", timeoutMs: 400 })
        expect(error.message).toContain("did not start answering")
        expect(chatRequests(fake)).toHaveLength(1)
        expect(yield* waitFor(() => fake.cutShort === 1)).toBe(true)
      }))

    it.scoped("a stall between chunks fails the stream", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("anthropic")
        fake.chat = { text: ["one", " two"], fault: { kind: "stall", afterChunks: 1, ms: 1_000 } }
        const error = yield* failure(connectionTo(fake))
        expect(error).toMatchObject({ _tag: "ProviderTimeout", timeoutMs: 200 })
        expect(error.message).toContain("went silent")
        expect(chatRequests(fake)).toHaveLength(1)
      }))

    it.scoped("a slow first chunk within the timeout is waited for", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("openai")
        fake.chat = { text: ["in", " time"], firstChunkDelayMs: 250, paceMs: 100 }
        expect(assemble(yield* chat(connectionTo(fake))).text).toBe("in time")
      }))
  })

  describe("circuit breaker", () => {
    it.scoped("opens after consecutive failed calls, fails fast while open, and closes after a successful trial", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("openai")
        fake.faults.set(chatPath.openai, { kind: "status", status: 502 })
        for (let call = 0; call < 3; call++) {
          expect((yield* failure(connectionTo(fake)))._tag).toBe("ProviderError")
        }
        const sent = chatRequests(fake).length
        const open = yield* failure(connectionTo(fake))
        expect(open._tag).toBe("ProviderUnavailable")
        expect(open.message).toContain("Loopback openai")
        expect(open.message).toMatch(/tried again in \d+ s/)
        expect(chatRequests(fake)).toHaveLength(sent)

        yield* Effect.sleep("350 millis")
        fake.faults.delete(chatPath.openai)
        expect(assemble(yield* chat(connectionTo(fake))).text).toBe("Hello from the loopback")
        expect(assemble(yield* chat(connectionTo(fake))).text).toBe("Hello from the loopback")
      }))

    it.scoped("a failed trial opens it again; answers of other providers are not affected", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("ollama")
        const other = yield* fakeProvider("ollama")
        fake.faults.set(chatPath.ollama, { kind: "status", status: 500 })
        for (let call = 0; call < 3; call++) yield* failure(connectionTo(fake))
        expect((yield* failure(connectionTo(fake)))._tag).toBe("ProviderUnavailable")
        expect(assemble(yield* chat(connectionTo(other))).text).toBe("Hello from the loopback")

        yield* Effect.sleep("350 millis")
        const sent = chatRequests(fake).length
        expect((yield* failure(connectionTo(fake)))._tag).toBe("ProviderError")
        expect(chatRequests(fake).length).toBeGreaterThan(sent)
        expect((yield* failure(connectionTo(fake)))._tag).toBe("ProviderUnavailable")
      }))

    it.scoped("a request the provider rejects (4xx) does not count against it", () =>
      Effect.gen(function*() {
        const fake = yield* fakeProvider("anthropic")
        fake.faults.set(chatPath.anthropic, { kind: "status", status: 400 })
        for (let call = 0; call < 4; call++) {
          expect((yield* failure(connectionTo(fake)))._tag).toBe("ProviderError")
        }
      }))
  })

  describe("development model", () => {
    const development: ProviderConnection = {
      name: "Development",
      kind: "openai-compatible",
      baseUrl: developmentBaseUrl,
      credential: Option.none(),
      connectTimeoutMs: 1_000,
      requestTimeoutMs: 5_000
    }

    it.scoped("echoes the last user message word by word, with usage, and lists one model", () =>
      Effect.gen(function*() {
        const chunks = yield* chat(development, {
          model: "webplus-development",
          messages: [{ role: "user", content: "first" }, { role: "assistant", content: "ok" }, {
            role: "user",
            content: "hello   there"
          }]
        })
        const answer = assemble(chunks)
        expect(answer.text).toBe(
          "This is the development model of Web+, not a language model. You said: hello there"
        )
        expect(chunks.filter((chunk) => chunk._tag === "text").length).toBe(15)
        expect(answer.usage).toEqual([{ _tag: "usage", promptTokens: 4, completionTokens: 15 }])
        expect(answer.last).toEqual({ _tag: "finish", reason: "stop" })
        const models = yield* Effect.flatMap(
          ProviderClients,
          (clients) => clients.forConnection(development).listModels
        )
        expect(models.map((model) => model.providerModel)).toEqual(["webplus-development"])
      }))
  })
})

describe("the development model's provider", () => {
  it.scopedLive(
    "is registered once while DEVELOPMENT_MODEL is on, with its model usable, and disabled when it is off",
    () =>
      Effect.gen(function*() {
        const dataDir = yield* freshDirectory
        const boot = <A, E, R>(on: boolean, effect: Effect.Effect<A, E, R>) =>
          effect.pipe(
            Effect.provide(Layer.fresh(testServer({ env: { DATA_DIR: dataDir, DEVELOPMENT_MODEL: String(on) } })))
          )
        const usable = (user: TestUser) =>
          Effect.map(
            call("GET", "/api/v1/models", { auth: user.accessToken }),
            (reply) => reply.body.items.map((model: { providerModel: string }) => model.providerModel)
          )
        const developmentProviders = (admin: TestUser) =>
          Effect.map(
            call("GET", "/api/v1/providers", { auth: admin.accessToken }),
            (reply) =>
              reply.body.items.filter((provider: { baseUrl: string }) => provider.baseUrl === developmentBaseUrl)
          )

        const { admin, user } = yield* boot(
          true,
          Effect.gen(function*() {
            const admin = yield* signUp()
            const user = yield* signUp()
            expect(yield* usable(user)).toEqual(["webplus-development"])
            // Only the server registers builtin providers: the API takes http(s) base URLs.
            const refused = yield* call("POST", "/api/v1/providers", {
              auth: admin.accessToken,
              body: { name: "Impostor", kind: "openai-compatible", baseUrl: developmentBaseUrl }
            })
            expect(refused.status).toBe(422)
            return { admin, user }
          })
        )
        yield* boot(
          false,
          Effect.gen(function*() {
            expect(yield* usable(user)).toEqual([])
            expect((yield* developmentProviders(admin)).map((provider: { enabled: boolean }) => provider.enabled))
              .toEqual([false])
          })
        )
        yield* boot(
          true,
          Effect.gen(function*() {
            expect(yield* usable(user)).toEqual(["webplus-development"])
            expect(yield* developmentProviders(admin)).toMatchObject([
              { name: "Development", kind: "openai-compatible", enabled: true, source: "environment" }
            ])
          })
        )
      }),
    60_000
  )
})

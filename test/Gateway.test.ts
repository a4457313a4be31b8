/**
 * The OpenAI-compatible gateway through the real server, called by the
 * official `openai` client as any program would (`baseURL: http://host/v1`),
 * in front of loopback providers that speak OpenAI's streaming chat API, on
 * both dialects: model names, completions streamed and not, tool calls,
 * usage, OpenAI's error bodies, a client that hangs up, usage per key.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import type * as Http from "node:http"
import OpenAI from "openai"
import { call, createKey, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { type FakeProvider, fakeProvider, type RecordedRequest, unreachableUrl } from "./fixtures/Providers.js"
import { TestServer, testServer } from "./fixtures/Server.js"

// --- a scripted upstream chat

/** What the loopback provider answers to the next chat request. */
interface Plan {
  /** Server-sent events' data, in order: objects are sent as JSON. */
  readonly events?: ReadonlyArray<unknown>
  /** An error status instead of a stream, with this body. */
  readonly status?: number
  readonly body?: unknown
  /** Keep the connection open after the events, as a model still thinking would. */
  readonly hold?: boolean
}

interface Upstream {
  plan: Plan
  /** Chat requests whose connection closed before their answer ended. */
  aborted: number
}

const chunk = (delta: Record<string, unknown>, finishReason: string | null = null) => ({
  id: "chatcmpl-upstream",
  object: "chat.completion.chunk",
  created: 1_700_000_000,
  model: "upstream",
  choices: [{ index: 0, delta, finish_reason: finishReason }]
})

const usageChunk = (prompt: number, completion: number) => ({
  id: "chatcmpl-upstream",
  object: "chat.completion.chunk",
  created: 1_700_000_000,
  model: "upstream",
  choices: [],
  usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
})

/** A text answer in pieces, its finish and its usage (5 prompt tokens, one completion token per piece). */
const textAnswer = (...pieces: ReadonlyArray<string>): Plan => ({
  events: [
    chunk({ role: "assistant", content: "" }),
    ...pieces.map((content) => chunk({ content })),
    chunk({}, "stop"),
    usageChunk(5, pieces.length),
    "[DONE]"
  ]
})

/** An answer that calls `get_weather` with `{"city":"Paris"}`, its arguments in two pieces. */
const toolCallAnswer: Plan = {
  events: [
    chunk({
      role: "assistant",
      content: null,
      tool_calls: [{
        index: 0,
        id: "call_upstream_1",
        type: "function",
        function: { name: "get_weather", arguments: "{\"city\":" }
      }]
    }),
    chunk({ tool_calls: [{ index: 0, function: { arguments: "\"Paris\"}" } }] }),
    chunk({}, "tool_calls"),
    usageChunk(12, 8),
    "[DONE]"
  ]
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const chatRoute = (upstream: Upstream) => async (_request: RecordedRequest, response: Http.ServerResponse) => {
  const plan = upstream.plan
  if (plan.status !== undefined) {
    response.writeHead(plan.status, { "content-type": "application/json" })
    return void response.end(JSON.stringify(plan.body ?? {}))
  }
  response.on("close", () => {
    if (!response.writableEnded) upstream.aborted++
  })
  response.writeHead(200, { "content-type": "text/event-stream" })
  for (const event of plan.events ?? []) {
    response.write(`data: ${typeof event === "string" ? event : JSON.stringify(event)}\n\n`)
    await sleep(5)
  }
  if (!plan.hold) response.end()
}

// --- the cast

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
  /** The user's key for the gateway (`models:read`, `models:use`). */
  readonly key: { readonly id: string; readonly secret: string }
  readonly openai: FakeProvider
  readonly upstream: Upstream
  /** The names of the two OpenAI-style providers (the second also serves `shared:1b`). */
  readonly providerName: string
  readonly secondProviderName: string
}

class TheCast extends Context.Tag("test/Gateway/Cast")<TheCast, Cast>() {}

let counter = 0
const uniqueName = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${counter++}`

const expectStatus = (reply: { status: number; body: any }, status: number) => {
  expect(reply.status, JSON.stringify(reply.body)).toBe(status)
  return reply.body
}

const registerProvider = (admin: TestUser, body: Record<string, unknown>) =>
  Effect.gen(function*() {
    const provider = expectStatus(yield* call("POST", "/api/v1/providers", { auth: admin.accessToken, body }), 201)
    expectStatus(yield* call("POST", `/api/v1/providers/${provider.id}/sync`, { auth: admin.accessToken }), 200)
    return provider
  })

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const user = yield* signUp()
      const openai = yield* fakeProvider("openai", [{ name: "loop-chat" }, { name: "shared:1b" }])
      const second = yield* fakeProvider("openai", [{ name: "shared:1b" }])
      const upstream: Upstream = { plan: textAnswer("Hello"), aborted: 0 }
      openai.routes.set("POST /v1/chat/completions", chatRoute(upstream))
      const providerName = uniqueName("loop")
      const secondProviderName = uniqueName("second")
      const timeouts = { connectTimeoutMs: 2_000, requestTimeoutMs: 5_000 }
      yield* registerProvider(admin, {
        name: providerName,
        kind: "openai",
        baseUrl: openai.url,
        credential: openai.apiKey,
        ...timeouts
      })
      yield* registerProvider(admin, {
        name: secondProviderName,
        kind: "openai-compatible",
        baseUrl: second.url,
        credential: second.apiKey,
        ...timeouts
      })
      const key = yield* createKey(user, ["models:read", "models:use"])
      return { admin, user, key, openai, upstream, providerName, secondProviderName }
    })
  ).pipe(
    Layer.provideMerge(testServer({
      dialect,
      env: {
        MODEL_STATUS_POLL_INTERVAL: "0 seconds",
        DEVELOPMENT_MODEL: "false",
        // Failures are answered at once: a retried or short-circuited call would blur what is tested.
        CHAT_RETRY_ATTEMPTS: "0",
        PROVIDER_BREAKER_THRESHOLD: "1000"
      }
    }))
  )

/** The official client, pointed at the gateway; no retries, so failures arrive as they are. */
const clientFor = (apiKey: string) =>
  Effect.map(TestServer, ({ baseUrl }) => new OpenAI({ apiKey, baseURL: `${baseUrl}/v1`, maxRetries: 0 }))

const promise = <A>(run: () => Promise<A>) => Effect.promise(run)

/** The error a client call rejects with. */
const failure = <A>(run: () => Promise<A>) => Effect.flip(Effect.tryPromise({ try: run, catch: (error) => error }))

const chatRequestsOf = (provider: FakeProvider) =>
  provider.requests.filter((request) => request.path === "/v1/chat/completions")

/** How many chat requests the loopback provider received. */
const chatRequests = (provider: FakeProvider) => chatRequestsOf(provider).length

/** The body of the last chat request the loopback provider received. */
const lastUpstreamBody = (provider: FakeProvider) => chatRequestsOf(provider).at(-1)?.body

const waitFor = (condition: () => boolean, what: string) =>
  Effect.gen(function*() {
    for (let attempt = 0; attempt < 100; attempt++) {
      if (condition()) return
      yield* Effect.sleep("50 millis")
    }
    expect.fail(`timed out waiting for ${what}`)
  })

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`OpenAI-compatible gateway on ${dialect}`, (it) => {
    describe("models", () => {
      it.effect("lists the usable models by the names people type, and the official client reads them", () =>
        Effect.gen(function*() {
          const { key, providerName, secondProviderName } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const page = yield* promise(() => client.models.list())
          const ids = page.data.map((model) => model.id).sort()
          expect(ids).toEqual(
            ["loop-chat", `${providerName}/shared:1b`, `${secondProviderName}/shared:1b`].sort()
          )
          const model = page.data.find((candidate) => candidate.id === "loop-chat")!
          expect(model).toMatchObject({ object: "model", owned_by: providerName })
          expect(Number.isInteger(model.created)).toBe(true)
        }))
    })

    describe("completions", () => {
      it.effect("answers a whole completion, translating the request for the provider", () =>
        Effect.gen(function*() {
          const { key, openai, upstream } = yield* TheCast
          upstream.plan = textAnswer("Hello", " there")
          const client = yield* clientFor(key.secret)
          const completion = yield* promise(() =>
            client.chat.completions.create({
              model: "loop-chat",
              messages: [
                { role: "system", content: "Be brief." },
                { role: "user", content: [{ type: "text", text: "Hi" }, { type: "text", text: "again" }] }
              ],
              temperature: 0.5,
              top_p: 0.9,
              max_completion_tokens: 20,
              stop: "END",
              seed: 7,
              // Not part of the gateway's format: ignored.
              ...({ webplus_unknown: true } as object)
            })
          )
          expect(completion.object).toBe("chat.completion")
          expect(completion.id).toMatch(/^chatcmpl-/)
          expect(completion.model).toBe("loop-chat")
          expect(completion.choices).toHaveLength(1)
          expect(completion.choices[0]!.message).toMatchObject({ role: "assistant", content: "Hello there" })
          expect(completion.choices[0]!.finish_reason).toBe("stop")
          expect(completion.usage).toEqual({ prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 })
          const sent = lastUpstreamBody(openai)
          expect(sent).toMatchObject({
            model: "loop-chat",
            messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Hi\nagain" }],
            temperature: 0.5,
            top_p: 0.9,
            max_tokens: 20,
            stop: ["END"],
            seed: 7,
            stream: true
          })
          expect(sent).not.toHaveProperty("webplus_unknown")
        }))

      it.effect("streams chunks the official client assembles, with a last usage chunk when asked", () =>
        Effect.gen(function*() {
          const { key, upstream } = yield* TheCast
          upstream.plan = textAnswer("Once", " upon", " a time")
          const client = yield* clientFor(key.secret)
          const chunks = yield* promise(async () => {
            const stream = await client.chat.completions.create({
              model: "loop-chat",
              messages: [{ role: "user", content: "Tell me a story" }],
              stream: true,
              stream_options: { include_usage: true }
            })
            const received: Array<OpenAI.Chat.Completions.ChatCompletionChunk> = []
            for await (const chunk of stream) received.push(chunk)
            return received
          })
          expect(chunks[0]!.choices[0]!.delta.role).toBe("assistant")
          expect(new Set(chunks.map((chunk) => chunk.id)).size).toBe(1)
          expect(chunks.every((chunk) => chunk.object === "chat.completion.chunk" && chunk.model === "loop-chat"))
            .toBe(true)
          const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("")
          expect(text).toBe("Once upon a time")
          const finishes = chunks.flatMap((chunk) => chunk.choices.map((choice) => choice.finish_reason))
          expect(finishes.filter((reason) => reason !== null)).toEqual(["stop"])
          const last = chunks[chunks.length - 1]!
          expect(last.choices).toEqual([])
          expect(last.usage).toEqual({ prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 })
          expect(chunks.slice(0, -1).every((chunk) => chunk.usage === null)).toBe(true)
        }))

      it.effect("streams without usage unless asked, in a form the client's stream helper accepts", () =>
        Effect.gen(function*() {
          const { key, upstream } = yield* TheCast
          upstream.plan = textAnswer("Fine", ", thanks")
          const client = yield* clientFor(key.secret)
          const { completion, usages } = yield* promise(async () => {
            const runner = client.chat.completions.stream({
              model: "loop-chat",
              messages: [{ role: "user", content: "How are you?" }]
            })
            const usages: Array<unknown> = []
            runner.on("chunk", (chunk) => usages.push(chunk.usage))
            return { completion: await runner.finalChatCompletion(), usages }
          })
          expect(completion.choices[0]!.message.content).toBe("Fine, thanks")
          expect(completion.choices[0]!.finish_reason).toBe("stop")
          expect(usages.every((usage) => usage === undefined)).toBe(true)
        }))

      it.effect("passes tools and tool_choice through and answers tool calls, whole and streamed", () =>
        Effect.gen(function*() {
          const { key, openai, upstream } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const tools: Array<OpenAI.Chat.Completions.ChatCompletionTool> = [{
            type: "function",
            function: {
              name: "get_weather",
              description: "The weather in a city",
              parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] }
            }
          }]
          const request = {
            model: "loop-chat",
            messages: [{ role: "user" as const, content: "Weather in Paris?" }],
            tools,
            tool_choice: { type: "function" as const, function: { name: "get_weather" } }
          }

          upstream.plan = toolCallAnswer
          const completion = yield* promise(() => client.chat.completions.create(request))
          expect(completion.choices[0]!.finish_reason).toBe("tool_calls")
          expect(completion.choices[0]!.message.tool_calls).toEqual([{
            id: "call_upstream_1",
            type: "function",
            function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" }
          }])
          expect(lastUpstreamBody(openai)).toMatchObject({
            tools,
            tool_choice: { type: "function", function: { name: "get_weather" } }
          })

          upstream.plan = toolCallAnswer
          const streamed = yield* promise(() =>
            client.chat.completions.stream({ ...request, stream_options: { include_usage: true } })
              .finalChatCompletion()
          )
          expect(streamed.choices[0]!.finish_reason).toBe("tool_calls")
          expect(streamed.choices[0]!.message.tool_calls).toMatchObject([{
            id: "call_upstream_1",
            type: "function",
            function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" }
          }])
          expect(streamed.usage).toEqual({ prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 })

          // The call and its result go back to the model as the conversation continues.
          upstream.plan = textAnswer("Sunny")
          const followUp = yield* promise(() =>
            client.chat.completions.create({
              model: "loop-chat",
              messages: [
                ...request.messages,
                { role: "assistant", content: null, tool_calls: completion.choices[0]!.message.tool_calls! },
                { role: "tool", tool_call_id: "call_upstream_1", content: "{\"sky\":\"clear\"}" }
              ],
              tools,
              tool_choice: "auto"
            })
          )
          expect(followUp.choices[0]!.message.content).toBe("Sunny")
          expect(lastUpstreamBody(openai)).toMatchObject({
            tool_choice: "auto",
            messages: [
              { role: "user", content: "Weather in Paris?" },
              {
                role: "assistant",
                tool_calls: [{
                  id: "call_upstream_1",
                  type: "function",
                  function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" }
                }]
              },
              { role: "tool", tool_call_id: "call_upstream_1", content: "{\"sky\":\"clear\"}" }
            ]
          })
        }))

      it.effect("takes a model by <provider>/<model> and by its id", () =>
        Effect.gen(function*() {
          const { key, providerName, upstream, user } = yield* TheCast
          const client = yield* clientFor(key.secret)
          upstream.plan = textAnswer("Shared")
          const shared = yield* promise(() =>
            client.chat.completions.create({
              model: `${providerName}/shared:1b`,
              messages: [{ role: "user", content: "Hi" }]
            })
          )
          expect(shared.model).toBe(`${providerName}/shared:1b`)
          expect(shared.choices[0]!.message.content).toBe("Shared")
          const models = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200)
          const loopChat = models.items.find((model: any) => model.providerModel === "loop-chat")
          upstream.plan = textAnswer("By id")
          const byId = yield* promise(() =>
            client.chat.completions.create({ model: loopChat.id, messages: [{ role: "user", content: "Hi" }] })
          )
          expect(byId.model).toBe("loop-chat")
        }))
    })

    describe("errors in OpenAI's format", () => {
      it.effect("401 without a key, with a wrong key, or with an access token", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const { user } = yield* TheCast
          const anonymous = yield* promise(() => fetch(`${baseUrl}/v1/models`))
          expect(anonymous.status).toBe(401)
          expect(anonymous.headers.get("www-authenticate")).toContain("Bearer")
          const body = (yield* promise(() => anonymous.json())) as any
          expect(body.error).toMatchObject({ type: "invalid_request_error", param: null, code: "invalid_api_key" })
          expect(typeof body.error.message).toBe("string")

          for (const credential of ["wp_not-a-real-key", user.accessToken]) {
            const client = yield* clientFor(credential)
            const error = yield* failure(() => client.models.list())
            expect(error).toBeInstanceOf(OpenAI.AuthenticationError)
            expect((error as InstanceType<typeof OpenAI.AuthenticationError>).code).toBe("invalid_api_key")
            const chat = yield* failure(() =>
              client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Hi" }] })
            )
            expect(chat).toBeInstanceOf(OpenAI.AuthenticationError)
          }
        }))

      it.effect("403 for a key without models:use", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const readOnly = yield* createKey(user, ["models:read"])
          const client = yield* clientFor(readOnly.secret)
          expect((yield* promise(() => client.models.list())).data.length).toBeGreaterThan(0)
          const error = yield* failure(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(error).toBeInstanceOf(OpenAI.PermissionDeniedError)
        }))

      it.effect("404 model_not_found for a model nobody may use under that name", () =>
        Effect.gen(function*() {
          const { key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          for (const model of ["no-such-model", "shared:1b"]) {
            const error = yield* failure(() =>
              client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] })
            )
            expect(error).toBeInstanceOf(OpenAI.NotFoundError)
            expect(error).toMatchObject({ status: 404, code: "model_not_found", param: "model" })
          }
        }))

      it.effect("400 invalid_request_error naming the field, for bodies the gateway cannot serve", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const { key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const cases: ReadonlyArray<[unknown, string | null]> = [
            [{ model: "loop-chat", messages: [] }, "messages"],
            [{ model: "loop-chat", messages: [{ role: "user", content: "Hi" }], temperature: 3 }, "temperature"],
            [{ model: "loop-chat", messages: [{ role: "robot", content: "Hi" }] }, "messages[0].role"],
            [{
              model: "loop-chat",
              messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }] }]
            }, "messages[0].content"],
            [{ model: "loop-chat", messages: [{ role: "user", content: "Hi" }], n: 2 }, "n"],
            [
              { model: "loop-chat", messages: [{ role: "user", content: "Hi" }], tool_choice: "required" },
              "tool_choice"
            ],
            [{ messages: [{ role: "user", content: "Hi" }] }, "model"]
          ]
          for (const [body, param] of cases) {
            const error = yield* failure(() => client.chat.completions.create(body as never))
            expect(error, JSON.stringify(body)).toBeInstanceOf(OpenAI.BadRequestError)
            expect((error as InstanceType<typeof OpenAI.BadRequestError>).param, JSON.stringify(body))
              .toMatch(new RegExp(`^${param!.replace(/[.[\]]/g, "\\$&")}`))
            expect((error as InstanceType<typeof OpenAI.BadRequestError>).type).toBe("invalid_request_error")
          }
          const malformed = yield* promise(() =>
            fetch(`${baseUrl}/v1/chat/completions`, {
              method: "POST",
              headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
              body: "{\"model\": "
            })
          )
          expect(malformed.status).toBe(400)
          expect(((yield* promise(() => malformed.json())) as any).error.type).toBe("invalid_request_error")
          const unknownRoute = yield* promise(() =>
            fetch(`${baseUrl}/v1/embeddings`, { method: "POST", headers: { authorization: `Bearer ${key.secret}` } })
          )
          expect(unknownRoute.status).toBe(404)
          expect(((yield* promise(() => unknownRoute.json())) as any).error.type).toBe("invalid_request_error")
        }))

      it.effect("provider failures: 502 for an upstream error, 503 when unreachable, never the upstream body", () =>
        Effect.gen(function*() {
          const { admin, key, upstream } = yield* TheCast
          const client = yield* clientFor(key.secret)
          upstream.plan = { status: 400, body: { error: { message: "UPSTREAM-DETAIL sk-upstream-secret" } } }
          const upstreamError = yield* failure(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(upstreamError).toBeInstanceOf(OpenAI.InternalServerError)
          expect(upstreamError).toMatchObject({ status: 502, type: "api_error", code: "provider_error" })
          expect(JSON.stringify((upstreamError as InstanceType<typeof OpenAI.APIError>).error))
            .not.toMatch(/UPSTREAM-DETAIL|sk-upstream-secret/)

          const streamed = yield* failure(() =>
            client.chat.completions.create({
              model: "loop-chat",
              messages: [{ role: "user", content: "Hi" }],
              stream: true
            })
          )
          expect(streamed).toMatchObject({ status: 502, code: "provider_error" })

          const deadProvider = expectStatus(
            yield* call("POST", "/api/v1/providers", {
              auth: admin.accessToken,
              body: { name: uniqueName("dead"), kind: "openai-compatible", baseUrl: yield* unreachableUrl }
            }),
            201
          )
          expectStatus(
            yield* call("POST", "/api/v1/models", {
              auth: admin.accessToken,
              body: { providerId: deadProvider.id, providerModel: "ghost" }
            }),
            201
          )
          const unreachable = yield* failure(() =>
            client.chat.completions.create({ model: "ghost", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(unreachable).toMatchObject({ status: 503, type: "api_error", code: "provider_unreachable" })
        }))

      it.effect("an upstream failure after the stream started arrives as an error event the client raises", () =>
        Effect.gen(function*() {
          const { key, upstream } = yield* TheCast
          const client = yield* clientFor(key.secret)
          upstream.plan = {
            events: [chunk({ role: "assistant", content: "Half an" }), { error: { message: "UPSTREAM-DETAIL" } }]
          }
          const { error, text } = yield* promise(async () => {
            let text = ""
            try {
              const stream = await client.chat.completions.create({
                model: "loop-chat",
                messages: [{ role: "user", content: "Hi" }],
                stream: true
              })
              for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? ""
              return { error: undefined, text }
            } catch (error) {
              return { error, text }
            }
          })
          expect(text).toBe("Half an")
          expect(error).toBeInstanceOf(OpenAI.APIError)
          expect(error).toMatchObject({ type: "api_error", code: "provider_error" })
          expect(JSON.stringify((error as InstanceType<typeof OpenAI.APIError>).error)).not.toContain("UPSTREAM-DETAIL")
        }))
    })

    describe("a client that hangs up", () => {
      it.effect("aborts the upstream request", () =>
        Effect.gen(function*() {
          const { key, upstream } = yield* TheCast
          const client = yield* clientFor(key.secret)
          upstream.plan = { events: [chunk({ role: "assistant", content: "Thinking" })], hold: true }
          const before = upstream.aborted
          const first = yield* promise(async () => {
            const stream = await client.chat.completions.create({
              model: "loop-chat",
              messages: [{ role: "user", content: "Think forever" }],
              stream: true
            })
            for await (const chunk of stream) {
              const content = chunk.choices[0]?.delta.content
              // Leaving the loop aborts the client's request.
              if (content) return content
            }
            return ""
          })
          expect(first).toBe("Thinking")
          yield* waitFor(() => upstream.aborted > before, "the provider's connection to close")
        }))

      it.effect("mid-way through a whole completion aborts the upstream request too", () =>
        Effect.gen(function*() {
          const { key, openai, upstream } = yield* TheCast
          const client = yield* clientFor(key.secret)
          upstream.plan = { events: [chunk({ role: "assistant", content: "Thinking" })], hold: true }
          const before = upstream.aborted
          const requested = chatRequests(openai)
          const controller = new AbortController()
          const pending = client.chat.completions.create(
            { model: "loop-chat", messages: [{ role: "user", content: "Think forever" }] },
            { signal: controller.signal }
          ).catch((error: unknown) => error)
          yield* waitFor(() => chatRequests(openai) > requested, "the provider to be asked")
          controller.abort()
          expect(yield* promise(() => pending)).toBeInstanceOf(OpenAI.APIUserAbortError)
          yield* waitFor(() => upstream.aborted > before, "the provider's connection to close")
        }))
    })

    describe("usage", () => {
      it.effect("is recorded per key, streamed or not, and readable by the key's owner", () =>
        Effect.gen(function*() {
          const { upstream, user } = yield* TheCast
          const other = yield* signUp()
          const key = yield* createKey(user, ["models:read", "models:use"])
          const client = yield* clientFor(key.secret)
          upstream.plan = textAnswer("One", " two")
          yield* promise(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Count" }] })
          )
          upstream.plan = textAnswer("Three")
          yield* promise(async () => {
            const stream = await client.chat.completions.create({
              model: "loop-chat",
              messages: [{ role: "user", content: "Count on" }],
              stream: true
            })
            for await (const _ of stream) {
              // drained
            }
          })
          const path = `/api/v1/auth/api-keys/${key.id}/usage`
          // A stream's usage is written as its request ends, just after the client has read the last event.
          let usage: any
          for (let attempt = 0; attempt < 50; attempt++) {
            usage = expectStatus(yield* call("GET", path, { auth: user.accessToken }), 200)
            if (usage.requests === 2) break
            yield* Effect.sleep("50 millis")
          }
          expect(usage).toEqual({
            apiKeyId: key.id,
            requests: 2,
            promptTokens: 10,
            completionTokens: 3,
            totalTokens: 13,
            byModel: [{
              source: "gateway",
              modelId: expect.any(String),
              modelName: "loop-chat",
              requests: 2,
              promptTokens: 10,
              completionTokens: 3,
              totalTokens: 13
            }]
          })
          // Someone else's key is not found; no credentials, no answer.
          expectStatus(yield* call("GET", path, { auth: other.accessToken }), 404)
          expectStatus(yield* call("GET", path), 401)
        }))
    })
  })
}

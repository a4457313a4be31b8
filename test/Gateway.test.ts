/**
 * The OpenAI-compatible gateway through the real server, called by the
 * official `openai` client as any program would (`baseURL: http://host/v1`),
 * in front of loopback providers that speak OpenAI's streaming chat API, on
 * both dialects: model names, completions streamed and not, tool calls,
 * usage, OpenAI's error bodies, a client that hangs up, usage per key.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import OpenAI from "openai"
import { call, createKey, expectStatus, signUp, type TestUser, uniqueName } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import {
  chatPath,
  chatRequests,
  type FakeProvider,
  fakeProvider,
  gatewayModelTotals,
  gatewayTestEnv,
  keyUsageOf,
  registerFake,
  unreachableUrl,
  upstreamSecret
} from "./fixtures/Providers.js"
import { TestServer, testServer } from "./fixtures/Server.js"
import { waitFor } from "./fixtures/Wait.js"

/** `get_weather` called with `{"city":"Paris"}`, its arguments in two pieces. */
const weatherCall = { id: "call_upstream_1", name: "get_weather", arguments: ["{\"city\":", "\"Paris\"}"] }

// --- the cast

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
  /** The user's key for the gateway (`models:read`, `models:use`). */
  readonly key: { readonly id: string; readonly secret: string }
  /** Serves `loop-chat` and `shared:1b`. */
  readonly openai: FakeProvider
  /** Serves `shared:1b` too. */
  readonly second: FakeProvider
  /** Serve `claude-loop` and `llama-loop:1b`. */
  readonly anthropic: FakeProvider
  readonly ollama: FakeProvider
  /** The names the providers were registered under. */
  readonly names: Readonly<Record<"openai" | "second" | "anthropic" | "ollama", string>>
}

class TheCast extends Context.Tag("test/Gateway/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const user = yield* signUp()
      const openai = yield* fakeProvider("openai", [{ name: "loop-chat" }, { name: "shared:1b" }])
      const second = yield* fakeProvider("openai", [{ name: "shared:1b" }])
      const anthropic = yield* fakeProvider("anthropic", [{ name: "claude-loop" }])
      const ollama = yield* fakeProvider("ollama", [{ name: "llama-loop:1b", capabilities: ["completion", "tools"] }])
      const names = {
        openai: uniqueName("loop"),
        second: uniqueName("second"),
        anthropic: uniqueName("anthropic"),
        ollama: uniqueName("ollama")
      }
      const timeouts = { connectTimeoutMs: 1_000, requestTimeoutMs: 5_000 }
      const register = (kind: string, name: string, fake: FakeProvider) =>
        registerFake(admin, fake, { name, kind, ...timeouts })
      yield* register("openai", names.openai, openai)
      yield* register("openai-compatible", names.second, second)
      yield* register("anthropic", names.anthropic, anthropic)
      yield* register("ollama", names.ollama, ollama)
      const key = yield* createKey(user, ["models:read", "models:use"])
      return { admin, user, key, openai, second, anthropic, ollama, names }
    })
  ).pipe(
    Layer.provideMerge(testServer({
      dialect,
      env: gatewayTestEnv
    }))
  )

/** The official client, pointed at the gateway; no retries, so failures arrive as they are. */
const clientFor = (apiKey: string) =>
  Effect.map(TestServer, ({ baseUrl }) => new OpenAI({ apiKey, baseURL: `${baseUrl}/v1`, maxRetries: 0 }))

const promise = <A>(run: () => Promise<A>) => Effect.promise(run)

/** The error a client call rejects with. */
const failure = <A>(run: () => Promise<A>) => Effect.flip(Effect.tryPromise({ try: run, catch: (error) => error }))

/** The body of the last chat request the loopback provider received. */
const lastUpstreamBody = (provider: FakeProvider) => chatRequests(provider).at(-1)?.body

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`OpenAI-compatible gateway on ${dialect}`, (it) => {
    describe("models", () => {
      it.effect("lists the usable models by the names people type, and the official client reads them", () =>
        Effect.gen(function*() {
          const { key, names } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const page = yield* promise(() => client.models.list())
          const ids = page.data.map((model) => model.id).sort()
          expect(ids).toEqual(
            ["loop-chat", `${names.openai}/shared:1b`, `${names.second}/shared:1b`, "claude-loop", "llama-loop:1b"]
              .sort()
          )
          const model = page.data.find((candidate) => candidate.id === "loop-chat")!
          expect(model).toMatchObject({ object: "model", owned_by: names.openai })
          expect(Number.isInteger(model.created)).toBe(true)
          for (const id of ["loop-chat", `${names.second}/shared:1b`, "llama-loop:1b"]) {
            expect(yield* promise(() => client.models.retrieve(id))).toEqual(page.data.find((found) => found.id === id))
          }
          const missing = yield* failure(() => client.models.retrieve("shared:1b"))
          expect(missing).toMatchObject({ status: 404, code: "model_not_found" })
        }))

      it.effect("takes the key as X-API-Key too", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const { key } = yield* TheCast
          const response = yield* promise(() => fetch(`${baseUrl}/v1/models`, { headers: { "x-api-key": key.secret } }))
          expect(response.status).toBe(200)
          expect(((yield* promise(() => response.json())) as any).object).toBe("list")
        }))
    })

    describe("completions", () => {
      it.effect("answers a whole completion, translating the request for the provider", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.chat = { text: ["Hello", " there"], usage: { promptTokens: 5, completionTokens: 2 } }
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

      it.effect("streams chunks the official client reads, with a last usage chunk when asked", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.chat = { text: ["Once", " upon", " a time"], usage: { promptTokens: 5, completionTokens: 3 } }
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
          const { key, openai } = yield* TheCast
          openai.chat = { text: ["Fine", ", thanks"] }
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
          expect(usages.length).toBeGreaterThan(0)
          expect(usages.every((usage) => usage === undefined)).toBe(true)
        }))

      it.effect("passes tools and tool_choice through and answers tool calls, whole and streamed", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
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
          const expectedCall = {
            id: "call_upstream_1",
            type: "function",
            function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" }
          }

          openai.chat = { toolCalls: [weatherCall], usage: { promptTokens: 12, completionTokens: 8 } }
          const completion = yield* promise(() => client.chat.completions.create(request))
          expect(completion.choices[0]!.finish_reason).toBe("tool_calls")
          expect(completion.choices[0]!.message.content).toBeNull()
          expect(completion.choices[0]!.message.tool_calls).toEqual([expectedCall])
          expect(lastUpstreamBody(openai)).toMatchObject({
            tools,
            tool_choice: { type: "function", function: { name: "get_weather" } }
          })

          const streamed = yield* promise(() =>
            client.chat.completions.stream({ ...request, stream_options: { include_usage: true } })
              .finalChatCompletion()
          )
          expect(streamed.choices[0]!.finish_reason).toBe("tool_calls")
          expect(streamed.choices[0]!.message.tool_calls).toMatchObject([expectedCall])
          expect(streamed.usage).toEqual({ prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 })

          // The call and its result go back to the model as the conversation continues.
          openai.chat = { text: ["Sunny"] }
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
              { role: "assistant", tool_calls: [expectedCall] },
              { role: "tool", tool_call_id: "call_upstream_1", content: "{\"sky\":\"clear\"}" }
            ]
          })
        }))

      it.effect("takes a model by <provider>/<model> and by its id", () =>
        Effect.gen(function*() {
          const { key, names, openai, second, user } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.chat = { text: ["First"] }
          second.chat = { text: ["Second"] }
          for (const [name, answer] of [[names.openai, "First"], [names.second, "Second"]] as const) {
            const shared = yield* promise(() =>
              client.chat.completions.create({
                model: `${name}/shared:1b`,
                messages: [{ role: "user", content: "Hi" }]
              })
            )
            expect(shared.model).toBe(`${name}/shared:1b`)
            expect(shared.choices[0]!.message.content).toBe(answer)
          }
          const models = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200)
          const loopChat = models.items.find((model: any) => model.providerModel === "loop-chat")
          openai.chat = { text: ["By id"] }
          const byId = yield* promise(() =>
            client.chat.completions.create({ model: loopChat.id, messages: [{ role: "user", content: "Hi" }] })
          )
          expect(byId.model).toBe("loop-chat")
          expect(byId.choices[0]!.message.content).toBe("By id")
          expect(lastUpstreamBody(openai).model).toBe("loop-chat")
        }))

      it.effect("speaks OpenAI's format in front of an Anthropic provider", () =>
        Effect.gen(function*() {
          const { anthropic, key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          anthropic.chat = { text: ["Bon", "jour"], usage: { promptTokens: 9, completionTokens: 2 } }
          const completion = yield* promise(() =>
            client.chat.completions.create({
              model: "claude-loop",
              messages: [{ role: "system", content: "Answer in French." }, { role: "user", content: "Hello" }],
              max_tokens: 50,
              seed: 7
            })
          )
          expect(completion.choices[0]!.message.content).toBe("Bonjour")
          expect(completion.choices[0]!.finish_reason).toBe("stop")
          expect(completion.usage).toEqual({ prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 })
          const sent = lastUpstreamBody(anthropic)
          expect(sent).toMatchObject({ model: "claude-loop", max_tokens: 50 })
          // OpenAI's own parameters are not sent to an API that does not know them.
          expect(sent).not.toHaveProperty("seed")

          anthropic.chat = { toolCalls: [{ ...weatherCall, id: "toolu_1" }] }
          const streamed = yield* promise(() =>
            client.chat.completions.stream({
              model: "claude-loop",
              messages: [{ role: "user", content: "Weather in Paris?" }],
              tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }]
            }).finalChatCompletion()
          )
          expect(streamed.choices[0]!.finish_reason).toBe("tool_calls")
          expect(streamed.choices[0]!.message.tool_calls).toMatchObject([{
            id: "toolu_1",
            type: "function",
            function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" }
          }])
        }))

      it.effect("speaks OpenAI's format in front of Ollama, tool calls included", () =>
        Effect.gen(function*() {
          const { key, ollama } = yield* TheCast
          const client = yield* clientFor(key.secret)
          ollama.chat = { text: ["Hi", " there"] }
          const text = yield* promise(() =>
            client.chat.completions.stream({
              model: "llama-loop:1b",
              messages: [{ role: "user", content: "Hello" }]
            }).finalContent()
          )
          expect(text).toBe("Hi there")
          ollama.chat = { toolCalls: [weatherCall] }
          const completion = yield* promise(() =>
            client.chat.completions.create({
              model: "llama-loop:1b",
              messages: [{ role: "user", content: "Weather in Paris?" }],
              tools: [{ type: "function", function: { name: "get_weather", parameters: { type: "object" } } }]
            })
          )
          expect(completion.choices[0]!.finish_reason).toBe("tool_calls")
          const [toolCall] = completion.choices[0]!.message.tool_calls ?? []
          expect(toolCall).toMatchObject({ type: "function", function: { name: "get_weather" } })
          expect(JSON.parse((toolCall as { function: { arguments: string } }).function.arguments)).toEqual({
            city: "Paris"
          })
          expect(toolCall!.id.length).toBeGreaterThan(0)
        }))
      it.effect("passes a question's inline images on, in front of Ollama and Anthropic", () =>
        Effect.gen(function*() {
          const { anthropic, key, ollama } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const content = [
            { type: "text" as const, text: "What is in it?" },
            { type: "image_url" as const, image_url: { url: "data:image/png;base64,iVBORw0KGgo=" } }
          ]
          ollama.chat = { text: ["A dot."] }
          yield* promise(() =>
            client.chat.completions.create({ model: "llama-loop:1b", messages: [{ role: "user", content }] })
          )
          expect(chatRequests(ollama).at(-1)!.body.messages).toEqual([
            { role: "user", content: "What is in it?", images: ["iVBORw0KGgo="] }
          ])
          anthropic.chat = { text: ["A dot."] }
          yield* promise(() =>
            client.chat.completions.create({ model: "claude-loop", messages: [{ role: "user", content }] })
          )
          expect(chatRequests(anthropic).at(-1)!.body.messages).toEqual([{
            role: "user",
            content: [
              { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
              { type: "text", text: "What is in it?" }
            ]
          }])
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

      it.effect("a key limited to some models sees and uses only those: gateway, model list, chat", () =>
        Effect.gen(function*() {
          const { names, openai, user } = yield* TheCast
          const all = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200).items
          const idOf = (providerModel: string) => all.find((model: any) => model.providerModel === providerModel).id
          const [loopChat, claude] = [idOf("loop-chat"), idOf("claude-loop")]
          const limited = yield* createKey(user, [
            "models:read",
            "models:use",
            "chat",
            "conversations:read",
            "conversations:write"
          ], {
            models: [loopChat, claude, loopChat]
          })
          const keys = expectStatus(yield* call("GET", "/api/v1/auth/api-keys", { auth: user.accessToken }), 200).items
          expect(keys.find((key: any) => key.id === limited.id).models).toEqual([loopChat, claude])

          // The gateway lists them under the names everyone else sees, and nothing else.
          const client = yield* clientFor(limited.secret)
          expect((yield* promise(() => client.models.list())).data.map((model) => model.id).sort()).toEqual(
            ["claude-loop", "loop-chat"]
          )
          openai.chat = { text: ["Allowed"] }
          const allowed = yield* promise(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(allowed.choices[0]!.message.content).toBe("Allowed")
          for (const model of ["llama-loop:1b", `${names.openai}/shared:1b`, idOf("llama-loop:1b")]) {
            expect(
              yield* failure(() =>
                client.chat.completions.create({ model, messages: [{ role: "user", content: "Hi" }] })
              )
            )
              .toMatchObject({ status: 404, code: "model_not_found" })
            expect(yield* failure(() => client.models.retrieve(model))).toMatchObject({ status: 404 })
          }

          // The REST API: the model list, a model, and chat.
          const listed = expectStatus(yield* call("GET", "/api/v1/models", { auth: limited.secret }), 200).items
          expect(listed.map((model: any) => model.id).sort()).toEqual([loopChat, claude].sort())
          expectStatus(yield* call("GET", `/api/v1/models/${idOf("llama-loop:1b")}`, { auth: limited.secret }), 404)
          expectStatus(yield* call("GET", `/api/v1/models/${loopChat}`, { auth: limited.secret }), 200)
          const refused = yield* call("POST", "/api/v1/chat", {
            auth: limited.secret,
            body: { content: "Hi", modelId: idOf("llama-loop:1b") }
          })
          expect(expectStatus(refused, 422).issues).toEqual([{ path: ["modelId"], message: "No such model" }])
          openai.chat = { text: ["Chatted"] }
          const chatted = expectStatus(
            // Titled: no title job calls the provider later, in another test.
            yield* call("POST", "/api/v1/chat", {
              auth: limited.secret,
              body: { content: "Hi", modelId: loopChat, title: "Limited" }
            }),
            200
          )
          expect(chatted.answer).toMatchObject({ status: "complete", content: "Chatted" })

          // The owner's other credentials are not limited.
          expect(expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200).items.length)
            .toBe(all.length)

          // Only models the owner may see: an unknown id is refused, naming it, and no key is made.
          const before = keys.length
          const unknown = "01900000-0000-7000-8000-00000000abcd"
          const bad = yield* call("POST", "/api/v1/auth/api-keys", {
            auth: user.accessToken,
            body: { name: "bad", scopes: ["models:use"], models: [loopChat, unknown] }
          })
          expect(expectStatus(bad, 422).issues).toEqual([{ path: ["models", 1], message: "No such model" }])
          expectStatus(
            yield* call("POST", "/api/v1/auth/api-keys", {
              auth: user.accessToken,
              body: { name: "empty", scopes: ["models:use"], models: [] }
            }),
            422
          )
          const after = expectStatus(yield* call("GET", "/api/v1/auth/api-keys", { auth: user.accessToken }), 200)
          expect(after.items.length).toBe(before)
        }))

      it.effect("a role limited to some models: its holders and their keys see and use only those", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const auth = { auth: admin.accessToken }
          const all = expectStatus(yield* call("GET", "/api/v1/models", auth), 200).items
          const idOf = (providerModel: string) => all.find((model: any) => model.providerModel === providerModel).id
          const [loopChat, claude] = [idOf("loop-chat"), idOf("claude-loop")]
          const name = uniqueName("local").toLowerCase().replace(/[^a-z0-9-]/g, "-").slice(0, 32)
          const permissions = [
            "models:read",
            "models:use",
            "chat",
            "conversations:read",
            "conversations:write",
            "keys:manage"
          ]
          const unknown = yield* call("POST", "/api/v1/admin/roles", {
            ...auth,
            body: { name, permissions, models: [loopChat, "01900000-0000-7000-8000-00000000abcd"] }
          })
          expect(expectStatus(unknown, 422).issues).toEqual([{ path: ["models", 1], message: "No such model" }])
          const role = expectStatus(
            yield* call("POST", "/api/v1/admin/roles", { ...auth, body: { name, permissions, models: [loopChat] } }),
            201
          )
          expect(role.models).toEqual([loopChat])
          const holder = yield* signUp()
          expectStatus(
            yield* call("PUT", `/api/v1/admin/users/${holder.id}/role`, { ...auth, body: { role: name } }),
            200
          )

          const listed = expectStatus(yield* call("GET", "/api/v1/models", { auth: holder.accessToken }), 200).items
          expect(listed.map((model: any) => model.id)).toEqual([loopChat])
          const refused = yield* call("POST", "/api/v1/chat", {
            auth: holder.accessToken,
            body: { content: "Hi", modelId: claude }
          })
          expect(expectStatus(refused, 422).issues).toEqual([{ path: ["modelId"], message: "No such model" }])
          // A key cannot reach past its owner's role; one without a list has the role's.
          const beyond = yield* call("POST", "/api/v1/auth/api-keys", {
            auth: holder.accessToken,
            body: { name: "beyond", scopes: ["models:read", "models:use"], models: [loopChat, claude] }
          })
          expect(expectStatus(beyond, 422).issues).toEqual([{ path: ["models", 1], message: "No such model" }])
          const key = yield* createKey(holder, ["models:read", "models:use"])
          const client = yield* clientFor(key.secret)
          expect((yield* promise(() => client.models.list())).data.map((model) => model.id)).toEqual(["loop-chat"])
          expect(
            yield* failure(() =>
              client.chat.completions.create({ model: "claude-loop", messages: [{ role: "user", content: "Hi" }] })
            )
          )
            .toMatchObject({ status: 404, code: "model_not_found" })

          // Lifted (null), every model again, on the next request.
          const lifted = expectStatus(
            yield* call("PATCH", `/api/v1/admin/roles/${name}`, { ...auth, body: { models: null } }),
            200
          )
          expect(lifted).toMatchObject({ models: null, permissions, userCount: 1 })
          expect((yield* promise(() => client.models.list())).data.length).toBe(all.length)
          expectStatus(
            yield* call("PUT", `/api/v1/admin/users/${holder.id}/role`, { ...auth, body: { role: "user" } }),
            200
          )
          expectStatus(yield* call("DELETE", `/api/v1/admin/roles/${name}`, auth), 204)
        }))

      it.effect("400 invalid_request_error naming the field, for bodies the gateway cannot serve", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const { key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const hi = [{ role: "user", content: "Hi" }]
          const cases: ReadonlyArray<[unknown, string]> = [
            [{ model: "loop-chat", messages: [] }, "messages"],
            [{ model: "loop-chat", messages: hi, temperature: 3 }, "temperature"],
            [{ model: "loop-chat", messages: [{ role: "robot", content: "Hi" }] }, "messages[0].role"],
            [{
              model: "loop-chat",
              messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "http://x/y.png" } }] }]
            }, "messages[0].content"],
            [{ model: "loop-chat", messages: [{ role: "tool", content: "42" }] }, "messages[0].tool_call_id"],
            [{ model: "loop-chat", messages: hi, n: 2 }, "n"],
            [{ model: "loop-chat", messages: hi, tool_choice: "required" }, "tool_choice"],
            [{ messages: hi }, "model"]
          ]
          for (const [body, param] of cases) {
            const error = yield* failure(() => client.chat.completions.create(body as never))
            expect(error, JSON.stringify(body)).toBeInstanceOf(OpenAI.BadRequestError)
            expect(error, JSON.stringify(body)).toMatchObject({ type: "invalid_request_error", param })
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
            fetch(`${baseUrl}/v1/audio/speech`, { method: "POST", headers: { authorization: `Bearer ${key.secret}` } })
          )
          expect(unknownRoute.status).toBe(404)
          expect(((yield* promise(() => unknownRoute.json())) as any).error.type).toBe("invalid_request_error")
        }))

      it.effect("provider failures: 502 for an upstream error, 503 when unreachable, never the upstream body", () =>
        Effect.gen(function*() {
          const { admin, key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.faults.set(chatPath.openai, { kind: "status", status: 400, times: 2 })
          const upstreamError = yield* failure(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(upstreamError).toBeInstanceOf(OpenAI.InternalServerError)
          expect(upstreamError).toMatchObject({ status: 502, type: "api_error", code: "provider_error" })
          expect(JSON.stringify((upstreamError as InstanceType<typeof OpenAI.APIError>).error))
            .not.toContain(upstreamSecret)
          const streamed = yield* failure(() =>
            client.chat.completions.create({
              model: "loop-chat",
              messages: [{ role: "user", content: "Hi" }],
              stream: true
            })
          )
          expect(streamed).toMatchObject({ status: 502, code: "provider_error" })
          // The provider's own wait is handed on, for the client's retry.
          openai.faults.set(chatPath.openai, { kind: "status", status: 429, times: 1, headers: { "retry-after": "7" } })
          const limited = yield* failure(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(limited).toMatchObject({ status: 502, code: "provider_error" })
          expect((limited as InstanceType<typeof OpenAI.APIError>).headers?.get("retry-after")).toBe("7")

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

          // Silent past the provider's connect timeout (1 s here).
          openai.faults.set(chatPath.openai, { kind: "hang", times: 1 })
          const silent = yield* failure(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Hi" }] })
          )
          expect(silent).toMatchObject({ status: 504, type: "api_error", code: "provider_timeout" })
        }))

      it.effect("413 for a body over MAX_BODY_SIZE", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const { key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const huge = "x".repeat(70 * 1024)
          const declared = yield* failure(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: huge }] })
          )
          expect(declared).toMatchObject({ status: 413, type: "invalid_request_error", code: "request_too_large" })
          // Sent in chunks, the size shows while reading: answered in OpenAI's format.
          const body = new TextEncoder().encode(
            JSON.stringify({ model: "loop-chat", messages: [{ role: "user", content: huge }] })
          )
          const chunked = yield* promise(() =>
            fetch(`${baseUrl}/v1/chat/completions`, {
              method: "POST",
              headers: { authorization: `Bearer ${key.secret}`, "content-type": "application/json" },
              body: new ReadableStream({
                start(controller) {
                  controller.enqueue(body)
                  controller.close()
                }
              }),
              duplex: "half"
            } as RequestInit)
          )
          expect(chunked.status).toBe(413)
          expect(((yield* promise(() => chunked.json())) as any).error).toMatchObject({
            type: "invalid_request_error",
            code: "request_too_large"
          })
        }))

      it.effect("an upstream failure after the stream started arrives as an error event the client raises", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.chat = { text: ["Half", " an", " answer"], fault: { kind: "error-event", afterChunks: 1 } }
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
          expect(text).toBe("Half")
          expect(error).toBeInstanceOf(OpenAI.APIError)
          expect(error).toMatchObject({ type: "api_error", code: "provider_error" })
          expect(JSON.stringify((error as InstanceType<typeof OpenAI.APIError>).error)).not.toContain(upstreamSecret)
        }))
    })

    describe("a client that hangs up", () => {
      it.effect("mid-stream aborts the upstream request", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.chat = { text: ["Thinking", " on"], fault: { kind: "stall", afterChunks: 1, ms: 60_000 } }
          const before = openai.cutShort
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
          yield* waitFor(() => openai.cutShort > before, "the provider's connection to close")
        }))

      it.effect("during a whole completion aborts the upstream request too", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.chat = { text: ["Thinking", " on"], fault: { kind: "stall", afterChunks: 1, ms: 60_000 } }
          const before = openai.cutShort
          const requested = chatRequests(openai).length
          const controller = new AbortController()
          const pending = client.chat.completions.create(
            { model: "loop-chat", messages: [{ role: "user", content: "Think forever" }] },
            { signal: controller.signal }
          ).catch((error: unknown) => error)
          yield* waitFor(() => chatRequests(openai).length > requested, "the provider to be asked")
          controller.abort()
          expect(yield* promise(() => pending)).toBeInstanceOf(OpenAI.APIUserAbortError)
          yield* waitFor(() => openai.cutShort > before, "the provider's connection to close")
        }))
    })

    describe("usage", () => {
      it.effect("is recorded per key, streamed or not, and readable by the key's owner only", () =>
        Effect.gen(function*() {
          const { anthropic, openai, user } = yield* TheCast
          const other = yield* signUp()
          const key = yield* createKey(user, ["models:read", "models:use"])
          const client = yield* clientFor(key.secret)
          openai.chat = { text: ["One", " two"], usage: { promptTokens: 5, completionTokens: 2 } }
          yield* promise(() =>
            client.chat.completions.create({ model: "loop-chat", messages: [{ role: "user", content: "Count" }] })
          )
          openai.chat = { text: ["Three"], usage: { promptTokens: 5, completionTokens: 1 } }
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
          anthropic.chat = { text: ["Quatre"], usage: { promptTokens: 4, completionTokens: 1 } }
          yield* promise(() =>
            client.chat.completions.create({ model: "claude-loop", messages: [{ role: "user", content: "Encore" }] })
          )
          const usage = yield* keyUsageOf(user, key.id, 3)
          expect(usage).toEqual({
            apiKeyId: key.id,
            requests: 3,
            promptTokens: 14,
            completionTokens: 4,
            totalTokens: 18,
            byModel: [gatewayModelTotals("claude-loop", 1, 4, 1), gatewayModelTotals("loop-chat", 2, 10, 3)]
          })
          // Only what was asked with this key counts.
          const fresh = yield* createKey(user, ["keys:manage"])
          expect(
            expectStatus(yield* call("GET", `/api/v1/auth/api-keys/${fresh.id}/usage`, { auth: fresh.secret }), 200)
          )
            .toMatchObject({ requests: 0, totalTokens: 0, byModel: [] })
          // Someone else's key is not found; no credentials, no answer.
          const path = `/api/v1/auth/api-keys/${key.id}/usage`
          expectStatus(yield* call("GET", path, { auth: other.accessToken }), 404)
          expectStatus(yield* call("GET", path), 401)
        }))

      it.effect("of a client that left before the provider reported it is counted by estimate", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          const key = yield* createKey(user, ["models:read", "models:use"])
          const client = yield* clientFor(key.secret)
          openai.chat = {
            text: ["Thinking", " on"],
            usage: { promptTokens: 50, completionTokens: 20 },
            fault: { kind: "stall", afterChunks: 1, ms: 60_000 }
          }
          const before = openai.cutShort
          yield* promise(async () => {
            const stream = await client.chat.completions.create({
              model: "loop-chat",
              messages: [{ role: "user", content: "Think of me" }],
              stream: true,
              stream_options: { include_usage: true }
            })
            for await (const chunk of stream) if (chunk.choices[0]?.delta.content) break
          })
          yield* waitFor(() => openai.cutShort > before, "the provider's connection to close")
          // "Think of me": 11 characters, 3 tokens, and 4 for the message; "Thinking": 2 tokens.
          expect(yield* keyUsageOf(user, key.id, 1)).toMatchObject({
            requests: 1,
            promptTokens: 7,
            completionTokens: 2,
            byModel: [gatewayModelTotals("loop-chat", 1, 7, 2)]
          })
        }))
    })
  })
  layer(testServer({ dialect, env: { DEVELOPMENT_MODEL: "true" } }), { excludeTestServices: true })(
    `the development model through the gateway on ${dialect}`,
    (it) => {
      it.effect("answers the official client, streamed with usage, without any language model", () =>
        Effect.gen(function*() {
          const user = yield* signUp()
          const key = yield* createKey(user, ["models:read", "models:use"])
          const client = yield* clientFor(key.secret)
          const ids = (yield* promise(() => client.models.list())).data.map((model) => model.id)
          expect(ids).toContain("webplus-development")
          const chunks = yield* promise(async () => {
            const stream = await client.chat.completions.create({
              model: "webplus-development",
              messages: [{ role: "user", content: "Hello gateway" }],
              stream: true,
              stream_options: { include_usage: true }
            })
            const received: Array<OpenAI.Chat.Completions.ChatCompletionChunk> = []
            for await (const chunk of stream) received.push(chunk)
            return received
          })
          const text = chunks.map((chunk) => chunk.choices[0]?.delta.content ?? "").join("")
          expect(text).toContain("You said: Hello gateway")
          expect(chunks.at(-1)!.usage!.completion_tokens).toBeGreaterThan(0)
        }))
    }
  )
  layer(
    testServer({
      dialect,
      env: {
        DEVELOPMENT_MODEL: "false",
        MODEL_STATUS_POLL_INTERVAL: "0 seconds",
        CHAT_RETRY_ATTEMPTS: "0",
        PROVIDER_BREAKER_THRESHOLD: "2",
        PROVIDER_BREAKER_COOLDOWN: "30 seconds"
      }
    }),
    { excludeTestServices: true }
  )(`the gateway in front of a failing provider on ${dialect}`, (it) => {
    it.scoped("short-circuits it after failures in a row: 503 provider_unavailable with Retry-After", () =>
      Effect.gen(function*() {
        const admin = yield* signUp()
        const user = yield* signUp()
        const failing = yield* fakeProvider("openai", [{ name: "flaky-chat" }])
        yield* registerFake(admin, failing, { name: uniqueName("flaky"), kind: "openai", connectTimeoutMs: 1_000 })
        const key = yield* createKey(user, ["models:read", "models:use"])
        const client = yield* clientFor(key.secret)
        failing.faults.set(chatPath.openai, { kind: "status", status: 502 })
        const ask = failure(() =>
          client.chat.completions.create({ model: "flaky-chat", messages: [{ role: "user", content: "Hi" }] })
        )
        for (let attempt = 0; attempt < 2; attempt++) {
          expect(yield* ask).toMatchObject({ status: 502, type: "api_error", code: "provider_error" })
        }
        const open = (yield* ask) as { status: number; type: string; code: string; headers: Headers }
        expect(open).toMatchObject({ status: 503, type: "api_error", code: "provider_unavailable" })
        const retryAfter = Number(open.headers.get("retry-after"))
        expect(retryAfter).toBeGreaterThan(0)
        expect(retryAfter).toBeLessThanOrEqual(30)
        // Short-circuited: the provider was not called a third time.
        expect(chatRequests(failing)).toHaveLength(2)
      }))
  })
}

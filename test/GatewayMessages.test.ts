/**
 * Anthropic's Messages API through the real server (`POST /v1/messages`), called by the official
 * `@anthropic-ai/sdk` client as any program would (`baseURL: http://host`, the Web+ key as its API
 * key), in front of loopback providers speaking OpenAI's, Ollama's and Anthropic's real wire
 * formats, on both dialects: answers whole and streamed, the request each provider receives
 * (system prompt, history, tools, images), tool calls and their results, stop reasons, usage per
 * key, and every failure in Anthropic's error body or as an `error` event. Also the rest of what
 * Anthropic's clients ask for: the models list in Anthropic's format (`GET /v1/models` with
 * `anthropic-version`), page by page, and `POST /v1/messages/count_tokens`.
 */
import Anthropic from "@anthropic-ai/sdk"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { estimatePromptTokens } from "../src/Chat/Context.js"
import { call, createKey, expectStatus } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import {
  chatPath,
  chatRequests,
  countedTokens,
  countRequests,
  countTokensPath,
  type FakeProvider,
  type GatewayCast,
  gatewayCast,
  gatewayModelTotals,
  gatewayTestEnv,
  keyUsageOf,
  upstreamSecret
} from "./fixtures/Providers.js"
import { TestServer, testServer } from "./fixtures/Server.js"
import { openSse } from "./fixtures/Sse.js"
import { waitFor } from "./fixtures/Wait.js"

/** `get_weather` called with `{"city":"Paris"}`, its arguments in two pieces. */
const weatherCall = { id: "call_upstream_1", name: "get_weather", arguments: ["{\"city\":", "\"Paris\"}"] }

const weatherTool = {
  name: "get_weather",
  description: "The weather in a city",
  input_schema: { type: "object" as const, properties: { city: { type: "string" } }, required: ["city"] }
}

/** The gateway's cast: an OpenAI-compatible server with `loop-chat`, Ollama with `llama-loop:1b`, Anthropic with `claude-loop`. */
class TheCast extends Context.Tag("test/GatewayMessages/Cast")<TheCast, GatewayCast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.scoped(
    TheCast,
    gatewayCast({
      openai: { name: "loop-chat" },
      ollama: { name: "llama-loop:1b", capabilities: ["completion", "tools"] },
      anthropic: { name: "claude-loop" }
    }, 10_000)
  ).pipe(Layer.provideMerge(testServer({ dialect, env: gatewayTestEnv })))

/** The official client, pointed at the gateway; no retries, so failures arrive as they are. */
const clientFor = (apiKey: string) =>
  Effect.map(TestServer, ({ baseUrl }) => new Anthropic({ apiKey, baseURL: baseUrl, maxRetries: 0 }))

type ApiError = InstanceType<typeof Anthropic.APIError>

const promise = <A>(run: () => Promise<A>) => Effect.promise(run)

/** The error a client call rejects with. */
const failure = <A>(run: () => Promise<A>) => Effect.flip(Effect.tryPromise({ try: run, catch: (error) => error }))

/** The body of the last chat request the loopback provider received. */
const lastUpstreamBody = (provider: FakeProvider) => chatRequests(provider).at(-1)?.body

const hi: Array<Anthropic.MessageParam> = [{ role: "user", content: "Hi" }]

/** Every event of a streamed answer, as the client's stream yields them (`ping`s are skipped by the client). */
const streamedEvents = (client: Anthropic, params: Omit<Anthropic.MessageCreateParamsNonStreaming, "stream">) =>
  promise(async () => {
    const stream = await client.messages.create({ ...params, stream: true })
    const events: Array<Anthropic.RawMessageStreamEvent> = []
    for await (const event of stream) events.push(event)
    return events
  })

/** A streamed answer read by hand: every event (name and data) the server sent. */
const rawEvents = (secret: string, body: unknown) =>
  Effect.scoped(Effect.gen(function*() {
    const stream = yield* openSse("POST", "/v1/messages", {
      body,
      headers: { "x-api-key": secret, "anthropic-version": "2023-06-01" }
    })
    expect(stream.status).toBe(200)
    expect(stream.contentType).toContain("text/event-stream")
    return yield* stream.rest
  }))

/** `GET /v1/models` as an OpenAI client asks for it (no `anthropic-version`): the same models, in OpenAI's format. */
const openAiModelList = (secret: string) =>
  Effect.flatMap(TestServer, ({ baseUrl }) =>
    promise(async () => {
      const response = await fetch(`${baseUrl}/v1/models`, { headers: { authorization: `Bearer ${secret}` } })
      expect(response.status).toBe(200)
      return (await response.json()) as {
        readonly object: string
        readonly data: ReadonlyArray<{ readonly id: string; readonly owned_by: string }>
      }
    }))

/** Every model the client's auto-pagination yields, `limit` a page. */
const everyModel = (client: Anthropic, limit?: number) =>
  promise(async () => {
    const models: Array<Anthropic.ModelInfo> = []
    for await (const model of client.models.list(limit === undefined ? {} : { limit })) models.push(model)
    return models
  })

/** A raw request to the gateway with `anthropic-version`, as an Anthropic client sends it. */
const anthropicFetch = (path: string, init: { readonly secret?: string; readonly body?: unknown } = {}) =>
  Effect.flatMap(TestServer, ({ baseUrl }) =>
    promise(async () => {
      const response = await fetch(`${baseUrl}${path}`, {
        method: init.body === undefined ? "GET" : "POST",
        headers: {
          "anthropic-version": "2023-06-01",
          ...(init.secret !== undefined ? { "x-api-key": init.secret } : {}),
          ...(init.body !== undefined ? { "content-type": "application/json" } : {})
        },
        ...(init.body !== undefined ? { body: JSON.stringify(init.body) } : {})
      })
      return { status: response.status, body: (await response.json()) as any }
    }))

/** `path` refuses a request without a key (401 in Anthropic's body, naming `x-api-key`), and `call` one with a wrong key. */
const refusedWithoutKey = (path: string, body: unknown, call: (client: Anthropic) => Promise<unknown>) =>
  Effect.gen(function*() {
    expect(yield* anthropicFetch(path, body === undefined ? {} : { body })).toEqual({
      status: 401,
      body: {
        type: "error",
        error: { type: "authentication_error", message: expect.stringContaining("x-api-key") }
      }
    })
    const wrongKey = yield* clientFor("wp_not-a-real-key")
    expect(yield* failure(() => call(wrongKey))).toBeInstanceOf(Anthropic.AuthenticationError)
  })

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`Anthropic's Messages API on ${dialect}`, (it) => {
    describe("answers", () => {
      it.effect("a whole message from an OpenAI-compatible model, with the system prompt and history sent on", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.chat = { text: ["Hello", " there"], usage: { promptTokens: 11, completionTokens: 2 } }
          const client = yield* clientFor(key.secret)
          const message = yield* promise(() =>
            client.messages.create({
              model: "loop-chat",
              max_tokens: 50,
              system: [{ type: "text", text: "Be brief." }, { type: "text", text: "Be kind." }],
              messages: [
                { role: "user", content: "My name is Ada." },
                { role: "assistant", content: [{ type: "text", text: "Hello Ada." }] },
                { role: "user", content: [{ type: "text", text: "What is my name?" }] }
              ],
              temperature: 0.5,
              top_p: 0.9,
              top_k: 40,
              stop_sequences: ["END"],
              metadata: { user_id: "someone" },
              // Not part of the format: ignored.
              ...({ webplus_unknown: true } as object)
            })
          )
          expect(message).toEqual({
            id: expect.stringMatching(/^msg_[0-9a-f]{32}$/),
            type: "message",
            role: "assistant",
            model: "loop-chat",
            content: [{ type: "text", text: "Hello there" }],
            stop_reason: "end_turn",
            stop_sequence: null,
            usage: { input_tokens: 11, output_tokens: 2 }
          })
          const sent = lastUpstreamBody(openai)
          expect(sent).toMatchObject({
            model: "loop-chat",
            messages: [
              { role: "system", content: "Be brief.\nBe kind." },
              { role: "user", content: "My name is Ada." },
              { role: "assistant", content: "Hello Ada." },
              { role: "user", content: "What is my name?" }
            ],
            temperature: 0.5,
            top_p: 0.9,
            max_tokens: 50,
            stop: ["END"],
            stream: true
          })
          // OpenAI's API has no top_k; nothing else of the request is passed on as it is.
          for (const field of ["top_k", "metadata", "webplus_unknown", "system", "stop_sequences"]) {
            expect(sent).not.toHaveProperty(field)
          }
        }))

      it.effect("a streamed message from an OpenAI-compatible model, event by event as Anthropic sends them", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.chat = { text: ["Once", " upon", " a time"], usage: { promptTokens: 5, completionTokens: 3 } }
          const client = yield* clientFor(key.secret)
          const params = { model: "loop-chat", max_tokens: 100, messages: [{ role: "user" as const, content: "Go" }] }
          const events = yield* streamedEvents(client, params)
          expect(events.map((event) => event.type)).toEqual([
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
          ])
          expect(events[0]).toEqual({
            type: "message_start",
            message: {
              id: expect.stringMatching(/^msg_/),
              type: "message",
              role: "assistant",
              model: "loop-chat",
              content: [],
              stop_reason: null,
              stop_sequence: null,
              usage: { input_tokens: 0, output_tokens: 0 }
            }
          })
          expect(events[1]).toEqual({
            type: "content_block_start",
            index: 0,
            content_block: { type: "text", text: "" }
          })
          expect(events[2]).toEqual({
            type: "content_block_delta",
            index: 0,
            delta: { type: "text_delta", text: "Once" }
          })
          expect(events[5]).toEqual({ type: "content_block_stop", index: 0 })
          expect(events[6]).toEqual({
            type: "message_delta",
            delta: { stop_reason: "end_turn", stop_sequence: null },
            usage: { input_tokens: 5, output_tokens: 3 }
          })

          // The client's stream helper assembles the same message.
          openai.chat = { text: ["Fine", ", thanks"], usage: { promptTokens: 4, completionTokens: 2 } }
          const final = yield* promise(() => client.messages.stream(params).finalMessage())
          expect(final).toMatchObject({
            role: "assistant",
            model: "loop-chat",
            content: [{ type: "text", text: "Fine, thanks" }],
            stop_reason: "end_turn",
            usage: { input_tokens: 4, output_tokens: 2 }
          })
        }))

      it.effect("the same from an Ollama model, whole and streamed, top_k among its options", () =>
        Effect.gen(function*() {
          const { key, ollama } = yield* TheCast
          const client = yield* clientFor(key.secret)
          ollama.chat = { text: ["Hi", " there"], usage: { promptTokens: 6, completionTokens: 2 } }
          const message = yield* promise(() =>
            client.messages.create({
              model: "llama-loop:1b",
              max_tokens: 30,
              system: "Answer in English.",
              messages: [
                { role: "user", content: "Hello" },
                { role: "assistant", content: "Hello!" },
                { role: "user", content: "How are you?" }
              ],
              top_k: 20
            })
          )
          expect(message).toMatchObject({
            model: "llama-loop:1b",
            content: [{ type: "text", text: "Hi there" }],
            stop_reason: "end_turn",
            usage: { input_tokens: 6, output_tokens: 2 }
          })
          const sent = lastUpstreamBody(ollama)
          expect(sent.messages).toEqual([
            { role: "system", content: "Answer in English." },
            { role: "user", content: "Hello" },
            { role: "assistant", content: "Hello!" },
            { role: "user", content: "How are you?" }
          ])
          expect(sent.options).toMatchObject({ top_k: 20, num_predict: 30 })

          ollama.chat = { text: ["Stream", "ed"] }
          const streamed = yield* promise(async () => {
            const pieces: Array<string> = []
            const stream = client.messages.stream({ model: "llama-loop:1b", max_tokens: 30, messages: hi })
            stream.on("text", (text) => pieces.push(text))
            return { pieces, final: await stream.finalMessage() }
          })
          expect(streamed.pieces).toEqual(["Stream", "ed"])
          expect(streamed.final.content).toEqual([{ type: "text", text: "Streamed" }])
          expect(streamed.final.stop_reason).toBe("end_turn")
        }))

      it.effect("on the wire: event names match their types, a ping follows message_start, usage at the end", () =>
        Effect.gen(function*() {
          const { anthropic, key } = yield* TheCast
          anthropic.chat = { text: ["Bon", "jour"], usage: { promptTokens: 9, completionTokens: 2 } }
          const events = yield* rawEvents(key.secret, {
            model: "claude-loop",
            max_tokens: 20,
            messages: hi,
            stream: true
          })
          for (const event of events) expect(event.data.type).toBe(event.event)
          expect(events.map((event) => event.event)).toEqual([
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
          ])
          expect(events.at(-2)!.data.usage).toEqual({ input_tokens: 9, output_tokens: 2 })
          expect(lastUpstreamBody(anthropic)).toMatchObject({ model: "claude-loop", max_tokens: 20 })
        }))

      it.effect("pings while the model is silent", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          openai.chat = { text: ["Thinking", " done"], fault: { kind: "stall", afterChunks: 1, ms: 6_500 } }
          const events = yield* rawEvents(key.secret, {
            model: "loop-chat",
            max_tokens: 20,
            messages: hi,
            stream: true
          })
          const names = events.map((event) => event.event)
          const first = names.indexOf("content_block_delta")
          const second = names.indexOf("content_block_delta", first + 1)
          expect(names.slice(first + 1, second)).toContain("ping")
          expect(events.filter((event) => event.event === "content_block_delta").map((event) => event.data.delta.text))
            .toEqual(["Thinking", " done"])
          expect(names.at(-1)).toBe("message_stop")
        }), { timeout: 20_000 })

      it.effect("images in a user turn reach Ollama and Anthropic in their formats", () =>
        Effect.gen(function*() {
          const { anthropic, key, ollama } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const content: Array<Anthropic.ContentBlockParam> = [
            { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
            { type: "text", text: "What is in it?" }
          ]
          ollama.chat = { text: ["A dot."] }
          yield* promise(() =>
            client.messages.create({ model: "llama-loop:1b", max_tokens: 10, messages: [{ role: "user", content }] })
          )
          expect(lastUpstreamBody(ollama).messages).toEqual([
            { role: "user", content: "What is in it?", images: ["iVBORw0KGgo="] }
          ])
          anthropic.chat = { text: ["A dot."] }
          yield* promise(() =>
            client.messages.create({ model: "claude-loop", max_tokens: 10, messages: [{ role: "user", content }] })
          )
          expect(lastUpstreamBody(anthropic).messages).toEqual([{
            role: "user",
            content: [
              { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBORw0KGgo=" } },
              { type: "text", text: "What is in it?" }
            ]
          }])
        }))
    })

    describe("tools", () => {
      it.effect("a tool call round trip in front of an OpenAI-compatible model: tool_use out, tool_result back", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const question: Anthropic.MessageParam = { role: "user", content: "Weather in Paris?" }
          openai.chat = {
            text: ["Let me look."],
            toolCalls: [weatherCall],
            usage: { promptTokens: 12, completionTokens: 8 }
          }
          const message = yield* promise(() =>
            client.messages.create({
              model: "loop-chat",
              max_tokens: 100,
              messages: [question],
              tools: [weatherTool],
              tool_choice: { type: "tool", name: "get_weather" }
            })
          )
          expect(message.stop_reason).toBe("tool_use")
          expect(message.content).toEqual([
            { type: "text", text: "Let me look." },
            { type: "tool_use", id: "call_upstream_1", name: "get_weather", input: { city: "Paris" } }
          ])
          expect(lastUpstreamBody(openai)).toMatchObject({
            tools: [{
              type: "function",
              function: {
                name: "get_weather",
                description: "The weather in a city",
                parameters: weatherTool.input_schema
              }
            }],
            tool_choice: { type: "function", function: { name: "get_weather" } }
          })

          // Streamed: the call's input as input_json_delta pieces, which the client assembles.
          const events = yield* streamedEvents(client, {
            model: "loop-chat",
            max_tokens: 100,
            messages: [question],
            tools: [weatherTool],
            tool_choice: { type: "any" }
          })
          expect(lastUpstreamBody(openai).tool_choice).toBe("required")
          expect(events.filter((event) => event.type === "content_block_start")).toEqual([
            { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
            {
              type: "content_block_start",
              index: 1,
              content_block: { type: "tool_use", id: "call_upstream_1", name: "get_weather", input: {} }
            }
          ])
          expect(
            events.flatMap((event) =>
              event.type === "content_block_delta" && event.delta.type === "input_json_delta"
                ? [[event.index, event.delta.partial_json]]
                : []
            )
          ).toEqual([[1, "{\"city\":"], [1, "\"Paris\"}"]])
          expect(events.find((event) => event.type === "message_delta")).toMatchObject({
            delta: { stop_reason: "tool_use" }
          })
          const final = yield* promise(() =>
            client.messages.stream({ model: "loop-chat", max_tokens: 100, messages: [question], tools: [weatherTool] })
              .finalMessage()
          )
          expect(final.content.at(-1)).toMatchObject({
            type: "tool_use",
            name: "get_weather",
            input: { city: "Paris" }
          })

          // The call and its result go back as the conversation continues.
          openai.chat = { text: ["Sunny"] }
          const followUp = yield* promise(() =>
            client.messages.create({
              model: "loop-chat",
              max_tokens: 100,
              messages: [
                question,
                { role: "assistant", content: message.content },
                {
                  role: "user",
                  content: [
                    { type: "tool_result", tool_use_id: "call_upstream_1", content: "{\"sky\":\"clear\"}" },
                    { type: "text", text: "And tomorrow?" }
                  ]
                }
              ],
              tools: [weatherTool],
              tool_choice: { type: "auto" }
            })
          )
          expect(followUp.content).toEqual([{ type: "text", text: "Sunny" }])
          expect(followUp.stop_reason).toBe("end_turn")
          expect(lastUpstreamBody(openai)).toMatchObject({
            tool_choice: "auto",
            messages: [
              { role: "user", content: "Weather in Paris?" },
              {
                role: "assistant",
                content: "Let me look.",
                tool_calls: [{
                  id: "call_upstream_1",
                  type: "function",
                  function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" }
                }]
              },
              { role: "tool", tool_call_id: "call_upstream_1", content: "{\"sky\":\"clear\"}" },
              { role: "user", content: "And tomorrow?" }
            ]
          })
        }))

      it.effect("tool calls whose pieces a provider interleaves stream as whole blocks, one after another", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const timeCall = { id: "call_upstream_2", name: "get_time", arguments: ["{\"zone\":", "\"CET\"}"] }
          openai.chat = { text: ["Checking."], toolCalls: [weatherCall, timeCall], interleaveToolCalls: true }
          const params = {
            model: "loop-chat",
            max_tokens: 100,
            messages: [{ role: "user" as const, content: "Weather and time in Paris?" }],
            tools: [weatherTool, { ...weatherTool, name: "get_time" }]
          }
          const events = yield* streamedEvents(client, params)
          // Each delta goes to the one block open, started before it and not yet stopped.
          let open: number | null = null
          for (const event of events) {
            if (event.type === "content_block_start") {
              expect(open).toBeNull()
              open = event.index
            }
            if (event.type === "content_block_delta") expect(event.index).toBe(open)
            if (event.type === "content_block_stop") {
              expect(event.index).toBe(open)
              open = null
            }
          }
          expect(open).toBeNull()
          const final = yield* promise(() => client.messages.stream(params).finalMessage())
          expect(final.content).toEqual([
            { type: "text", text: "Checking." },
            { type: "tool_use", id: "call_upstream_1", name: "get_weather", input: { city: "Paris" } },
            { type: "tool_use", id: "call_upstream_2", name: "get_time", input: { zone: "CET" } }
          ])
          expect(final.stop_reason).toBe("tool_use")
        }))

      it.effect("tool calls of Ollama get ids; their results reach Ollama and Anthropic in their formats", () =>
        Effect.gen(function*() {
          const { anthropic, key, ollama } = yield* TheCast
          const client = yield* clientFor(key.secret)
          ollama.chat = { toolCalls: [weatherCall] }
          const message = yield* promise(() =>
            client.messages.create({
              model: "llama-loop:1b",
              max_tokens: 100,
              messages: [{ role: "user", content: "Weather in Paris?" }],
              tools: [weatherTool]
            })
          )
          expect(message.stop_reason).toBe("tool_use")
          const [toolUse] = message.content
          expect(toolUse).toEqual({
            type: "tool_use",
            // Ollama's API has no ids: its adapter numbers the calls after a prefix of the answer's own.
            id: expect.stringMatching(/^call_[\w-]{12}_\d+$/),
            name: "get_weather",
            input: { city: "Paris" }
          })
          const id = (toolUse as Anthropic.ToolUseBlock).id
          const history: Array<Anthropic.MessageParam> = [
            { role: "user", content: "Weather in Paris?" },
            { role: "assistant", content: message.content },
            {
              role: "user",
              content: [{ type: "tool_result", tool_use_id: id, content: [{ type: "text", text: "Sun" }] }]
            }
          ]
          ollama.chat = { text: ["Sunny"] }
          yield* promise(() =>
            client.messages.create({ model: "llama-loop:1b", max_tokens: 100, messages: history, tools: [weatherTool] })
          )
          expect(lastUpstreamBody(ollama).messages).toEqual([
            { role: "user", content: "Weather in Paris?" },
            {
              role: "assistant",
              content: "",
              tool_calls: [{ function: { name: "get_weather", arguments: { city: "Paris" } } }]
            },
            { role: "tool", content: "Sun", tool_name: "get_weather" }
          ])
          anthropic.chat = { text: ["Sunny"] }
          yield* promise(() =>
            client.messages.create({
              model: "claude-loop",
              max_tokens: 100,
              messages: history,
              tools: [weatherTool],
              tool_choice: { type: "tool", name: "get_weather" }
            })
          )
          expect(lastUpstreamBody(anthropic)).toMatchObject({
            tools: [weatherTool],
            tool_choice: { type: "tool", name: "get_weather" },
            messages: [
              { role: "user", content: "Weather in Paris?" },
              { role: "assistant", content: [{ type: "tool_use", id, name: "get_weather", input: { city: "Paris" } }] },
              { role: "user", content: [{ type: "tool_result", tool_use_id: id, content: "Sun" }] }
            ]
          })
        }))
    })

    describe("tool call ids", () => {
      it.effect("a tool call the provider sent without an id gets a toolu_ one, whole and streamed", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.chat = { toolCalls: [{ ...weatherCall, id: "" }] }
          const params = { model: "loop-chat", max_tokens: 50, messages: hi, tools: [weatherTool] }
          const message = yield* promise(() => client.messages.create(params))
          expect(message.content).toEqual([{
            type: "tool_use",
            id: expect.stringMatching(/^toolu_[0-9a-f]{32}$/),
            name: "get_weather",
            input: { city: "Paris" }
          }])
          const streamed = yield* promise(() => client.messages.stream(params).finalMessage())
          expect(streamed.content).toEqual([{
            type: "tool_use",
            id: expect.stringMatching(/^toolu_[0-9a-f]{32}$/),
            name: "get_weather",
            input: { city: "Paris" }
          }])
          expect((streamed.content[0] as Anthropic.ToolUseBlock).id).not.toBe(
            (message.content[0] as Anthropic.ToolUseBlock).id
          )
        }))
    })

    describe("stop reasons", () => {
      it.effect("end_turn, max_tokens, tool_use, and stop_sequence where the provider says which", () =>
        Effect.gen(function*() {
          const { anthropic, key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const ask = (model: string) =>
            promise(() => client.messages.create({ model, max_tokens: 5, messages: hi, tools: [weatherTool] }))
          openai.chat = { text: ["Done"] }
          expect(yield* ask("loop-chat")).toMatchObject({ stop_reason: "end_turn", stop_sequence: null })
          openai.chat = { text: ["Cut"], finish: "length" }
          expect(yield* ask("loop-chat")).toMatchObject({ stop_reason: "max_tokens", stop_sequence: null })
          // A provider that says "stop" after calling a tool: still tool_use.
          openai.chat = { toolCalls: [weatherCall], finish: "stop" }
          expect(yield* ask("loop-chat")).toMatchObject({ stop_reason: "tool_use" })
          anthropic.chat = { text: ["One, two"], stopSequence: "three" }
          expect(yield* ask("claude-loop")).toMatchObject({ stop_reason: "stop_sequence", stop_sequence: "three" })
          anthropic.chat = { text: ["Long"], finish: "length" }
          const streamed = yield* streamedEvents(client, { model: "claude-loop", max_tokens: 5, messages: hi })
          expect(streamed.find((event) => event.type === "message_delta")).toMatchObject({
            delta: { stop_reason: "max_tokens", stop_sequence: null }
          })
          anthropic.chat = { text: ["One, two"], stopSequence: "three" }
          const stopped = yield* streamedEvents(client, { model: "claude-loop", max_tokens: 5, messages: hi })
          expect(stopped.find((event) => event.type === "message_delta")).toMatchObject({
            delta: { stop_reason: "stop_sequence", stop_sequence: "three" }
          })
        }))
    })

    describe("usage", () => {
      it.effect("is recorded for the key, streamed or not, with the completions' usage", () =>
        Effect.gen(function*() {
          const { ollama, openai, user } = yield* TheCast
          const key = yield* createKey(user, ["models:read", "models:use"])
          const client = yield* clientFor(key.secret)
          openai.chat = { text: ["One"], usage: { promptTokens: 5, completionTokens: 1 } }
          yield* promise(() => client.messages.create({ model: "loop-chat", max_tokens: 10, messages: hi }))
          openai.chat = { text: ["Two", " three"], usage: { promptTokens: 6, completionTokens: 2 } }
          yield* streamedEvents(client, { model: "loop-chat", max_tokens: 10, messages: hi })
          ollama.chat = { text: ["Four"], usage: { promptTokens: 3, completionTokens: 1 } }
          yield* promise(() => client.messages.stream({ model: "llama-loop:1b", max_tokens: 10, messages: hi }).done())
          const usage = yield* keyUsageOf(user, key.id, 3)
          expect(usage).toEqual({
            apiKeyId: key.id,
            requests: 3,
            promptTokens: 14,
            completionTokens: 4,
            totalTokens: 18,
            byModel: [gatewayModelTotals("llama-loop:1b", 1, 3, 1), gatewayModelTotals("loop-chat", 2, 11, 3)]
          })
        }))
    })

    describe("errors in Anthropic's format", () => {
      it.effect("401 authentication_error for a wrong key, no key, or an access token", () =>
        Effect.gen(function*() {
          const { baseUrl } = yield* TestServer
          const { user } = yield* TheCast
          for (const credential of ["wp_not-a-real-key", user.accessToken]) {
            const client = yield* clientFor(credential)
            const error = yield* failure(() =>
              client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi })
            )
            expect(error).toBeInstanceOf(Anthropic.AuthenticationError)
            expect((error as ApiError).error).toEqual({
              type: "error",
              error: { type: "authentication_error", message: expect.any(String) }
            })
          }
          const anonymous = yield* promise(() =>
            fetch(`${baseUrl}/v1/messages`, {
              method: "POST",
              headers: { "content-type": "application/json", "anthropic-version": "2023-06-01" },
              body: JSON.stringify({ model: "loop-chat", max_tokens: 5, messages: hi })
            })
          )
          expect(anonymous.status).toBe(401)
          const body = (yield* promise(() => anonymous.json())) as any
          expect(body).toEqual({ type: "error", error: { type: "authentication_error", message: expect.any(String) } })
          expect(body.error.message).toContain("x-api-key")
        }))

      it.effect("400 invalid_request_error naming the field, for requests the gateway cannot serve", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const requested = chatRequests(openai).length
          const image = (source: unknown) => ({
            model: "loop-chat",
            max_tokens: 5,
            messages: [{ role: "user", content: [{ type: "text", text: "Look" }, { type: "image", source }] }]
          })
          const cases: ReadonlyArray<[unknown, string]> = [
            [{ model: "loop-chat", messages: hi }, "max_tokens"],
            [{ model: "loop-chat", max_tokens: 0, messages: hi }, "max_tokens"],
            [{ model: "loop-chat", max_tokens: 5, messages: [] }, "messages"],
            [{ max_tokens: 5, messages: hi }, "model"],
            [{ model: "loop-chat", max_tokens: 5, messages: hi, temperature: 1.5 }, "temperature"],
            [{ model: "loop-chat", max_tokens: 5, messages: [{ role: "robot", content: "Hi" }] }, "messages[0].role"],
            [image({ type: "url", url: "https://example.com/a.png" }), "messages[0].content[1].source.type"],
            [
              image({ type: "base64", media_type: "image/tiff", data: "AAAA" }),
              "messages[0].content[1].source.media_type"
            ],
            [{
              model: "loop-chat",
              max_tokens: 5,
              messages: [{ role: "user", content: [{ type: "document", source: { type: "text", data: "x" } }] }]
            }, "messages[0].content[0].type"],
            [{
              model: "loop-chat",
              max_tokens: 5,
              messages: [{ role: "assistant", content: [{ type: "tool_result", tool_use_id: "x", content: "y" }] }]
            }, "messages[0].content[0].type"],
            [{
              model: "loop-chat",
              max_tokens: 5,
              messages: [{
                role: "user",
                content: [{
                  type: "tool_result",
                  tool_use_id: "x",
                  content: [{ type: "image", source: { type: "base64", media_type: "image/png", data: "AAAA" } }]
                }]
              }]
            }, "messages[0].content[0].content"],
            [{ model: "loop-chat", max_tokens: 5, messages: hi, tool_choice: { type: "any" } }, "tool_choice"],
            [{
              model: "loop-chat",
              max_tokens: 5,
              messages: hi,
              tools: [weatherTool],
              tool_choice: { type: "tool", name: "get_time" }
            }, "tool_choice"]
          ]
          for (const [body, field] of cases) {
            const error = yield* failure(() => client.messages.create(body as never))
            expect(error, JSON.stringify(body)).toBeInstanceOf(Anthropic.BadRequestError)
            const sent = (error as ApiError).error as any
            expect(sent.type, JSON.stringify(body)).toBe("error")
            expect(sent.error.type, JSON.stringify(body)).toBe("invalid_request_error")
            expect(sent.error.message, JSON.stringify(body)).toContain(field)
          }
          // Nothing reached the provider.
          expect(chatRequests(openai).length).toBe(requested)
        }))

      it.effect("403 permission_error for a key without models:use, 404 not_found_error for models it may not use", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const readOnly = yield* clientFor((yield* createKey(user, ["models:read"])).secret)
          const forbidden = yield* failure(() =>
            readOnly.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi })
          )
          expect(forbidden).toBeInstanceOf(Anthropic.PermissionDeniedError)
          expect((forbidden as ApiError).type).toBe("permission_error")

          const models = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200).items
          const loopChat = models.find((model: any) => model.providerModel === "loop-chat").id
          const limited = yield* clientFor((yield* createKey(user, ["models:use"], { models: [loopChat] })).secret)
          for (const [client, model] of [[limited, "llama-loop:1b"], [limited, "no-such-model"]] as const) {
            const error = yield* failure(() => client.messages.create({ model, max_tokens: 5, messages: hi }))
            expect(error).toBeInstanceOf(Anthropic.NotFoundError)
            expect((error as ApiError).error).toEqual({
              type: "error",
              error: {
                type: "not_found_error",
                message: `The model '${model}' does not exist or you do not have access to it.`
              }
            })
          }
        }))

      it.effect("429 rate_limit_error with retry-after once the key's token budget is spent", () =>
        Effect.gen(function*() {
          const { openai, user } = yield* TheCast
          const budgeted = yield* createKey(user, ["models:use"], { tokenBudget: 5 })
          const client = yield* clientFor(budgeted.secret)
          openai.chat = { text: ["Spent"], usage: { promptTokens: 7, completionTokens: 1 } }
          yield* promise(() => client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi }))
          const error = yield* failure(() =>
            client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi })
          )
          expect(error).toBeInstanceOf(Anthropic.RateLimitError)
          const limited = error as ApiError
          expect(limited.type).toBe("rate_limit_error")
          expect((limited.error as any).error.message).toContain("token budget")
          expect(Number(limited.headers?.get("retry-after"))).toBeGreaterThan(0)
          // Streamed: refused the same way, before any event.
          const streamed = yield* failure(() =>
            client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi, stream: true })
          )
          expect(streamed).toBeInstanceOf(Anthropic.RateLimitError)
        }))

      it.effect("a provider failing before the answer: an api_error status, never the upstream body", () =>
        Effect.gen(function*() {
          const { key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.faults.set(chatPath.openai, { kind: "status", status: 400, times: 2 })
          for (const stream of [false, true]) {
            const error = yield* failure(() =>
              client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi, stream })
            )
            expect(error).toBeInstanceOf(Anthropic.InternalServerError)
            expect(error).toMatchObject({ status: 502, type: "api_error" })
            expect(JSON.stringify((error as ApiError).error)).not.toContain(upstreamSecret)
          }
          // The provider's own wait is handed on, for the client's retry.
          openai.faults.set(chatPath.openai, { kind: "status", status: 429, times: 1, headers: { "retry-after": "7" } })
          const limited = yield* failure(() =>
            client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi })
          )
          expect(limited).toMatchObject({ status: 502, type: "api_error" })
          expect((limited as ApiError).headers?.get("retry-after")).toBe("7")
        }))

      it.effect("a provider failing during the stream: an error event the client raises, then the end", () =>
        Effect.gen(function*() {
          const { anthropic, key, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          openai.chat = { text: ["Half", " an", " answer"], fault: { kind: "error-event", afterChunks: 1 } }
          const { error, text } = yield* promise(async () => {
            let text = ""
            try {
              const stream = await client.messages.create({
                model: "loop-chat",
                max_tokens: 20,
                messages: hi,
                stream: true
              })
              for await (const event of stream) {
                if (event.type === "content_block_delta" && event.delta.type === "text_delta") text += event.delta.text
              }
              return { error: undefined, text }
            } catch (error) {
              return { error, text }
            }
          })
          expect(text).toBe("Half")
          expect(error).toBeInstanceOf(Anthropic.APIError)
          expect((error as ApiError).type).toBe("api_error")
          expect(JSON.stringify((error as ApiError).error)).not.toContain(upstreamSecret)

          // On the wire: the last event is `error`, no message_stop; Anthropic's own overload stays hidden too.
          anthropic.chat = { text: ["Half", " more"], fault: { kind: "error-event", afterChunks: 1 } }
          const events = yield* rawEvents(key.secret, {
            model: "claude-loop",
            max_tokens: 20,
            messages: hi,
            stream: true
          })
          const last = events.at(-1)!
          expect(last.event).toBe("error")
          expect(last.data).toEqual({ type: "error", error: { type: "api_error", message: expect.any(String) } })
          expect(JSON.stringify(events)).not.toContain(upstreamSecret)
          expect(events.map((event) => event.event)).not.toContain("message_stop")
        }))

      it.effect("unknown paths an Anthropic client asks for answer 404 not_found_error", () =>
        Effect.gen(function*() {
          const { key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const error = yield* failure(() => client.messages.batches.list())
          expect(error).toBeInstanceOf(Anthropic.NotFoundError)
          expect((error as ApiError).type).toBe("not_found_error")
        }))
    })

    describe("models in Anthropic's format", () => {
      it.effect("lists the models the key may use page by page, as OpenAI's list names them, and retrieves each", () =>
        Effect.gen(function*() {
          const { key, user } = yield* TheCast
          const client = yield* clientFor(key.secret)
          // Without `anthropic-version`, OpenAI's format as before; with it (the SDK sends it), Anthropic's.
          const openAiList = yield* openAiModelList(key.secret)
          expect(openAiList.object).toBe("list")
          const ids = openAiList.data.map((model) => model.id)
          expect([...ids].sort()).toEqual(["claude-loop", "llama-loop:1b", "loop-chat"])

          const page = yield* promise(() => client.models.list())
          const registered = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200).items
          const claude = registered.find((model: any) => model.providerModel === "claude-loop")
          expect(page.data.map((model) => model.id)).toEqual(ids)
          expect(page.data.find((model) => model.id === "claude-loop")).toEqual({
            type: "model",
            id: "claude-loop",
            display_name: claude.displayName,
            created_at: claude.createdAt
          })
          for (const model of page.data) {
            expect(model.created_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/)
          }
          expect(page).toMatchObject({ has_more: false, first_id: ids[0], last_id: ids[2] })

          // A page at a time: the client follows `last_id` while `has_more`.
          const first = yield* promise(() => client.models.list({ limit: 1 }))
          expect(first).toMatchObject({ has_more: true, first_id: ids[0], last_id: ids[0] })
          expect(first.data.map((model) => model.id)).toEqual([ids[0]])
          const second = yield* promise(() => first.getNextPage())
          expect(second.data.map((model) => model.id)).toEqual([ids[1]])
          expect((yield* everyModel(client, 1)).map((model) => model.id)).toEqual(ids)
          expect((yield* everyModel(client, 2)).map((model) => model.id)).toEqual(ids)
          const last = yield* promise(() => client.models.list({ after_id: ids[1]!, limit: 5 }))
          expect(last).toMatchObject({ has_more: false, first_id: ids[2], last_id: ids[2] })
          // Backwards from `before_id`, `has_more` saying whether more come before.
          const before = yield* promise(() => client.models.list({ before_id: ids[2]!, limit: 1 }))
          expect(before).toMatchObject({ has_more: true, first_id: ids[1], last_id: ids[1] })
          const start = yield* promise(() => client.models.list({ before_id: ids[2]!, limit: 1000 }))
          expect(start.data.map((model) => model.id)).toEqual([ids[0], ids[1]])
          expect(start.has_more).toBe(false)
          const none = yield* promise(() => client.models.list({ before_id: ids[0]! }))
          expect(none).toMatchObject({ data: [], has_more: false, first_id: null, last_id: null })

          // One model, by its listed id, as `<provider>/<model>` (a slash in the path) or by its UUID.
          const owner = openAiList.data.find((model) => model.id === "claude-loop")!.owned_by
          for (const name of ["claude-loop", `${owner}/claude-loop`, claude.id]) {
            expect(yield* promise(() => client.models.retrieve(name))).toEqual(
              page.data.find((model) => model.id === "claude-loop")
            )
          }
        }))

      it.effect("400 invalid_request_error for a bad page: limit out of 1 to 1000, an unknown cursor, both cursors", () =>
        Effect.gen(function*() {
          const { key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const cases: ReadonlyArray<[Anthropic.ModelListParams, string]> = [
            [{ limit: 0 }, "limit"],
            [{ limit: 1001 }, "limit"],
            [{ limit: 1.5 }, "limit"],
            [{ after_id: "no-such-model" }, "after_id"],
            [{ before_id: "no-such-model" }, "before_id"],
            [{ after_id: "loop-chat", before_id: "claude-loop" }, "before_id"]
          ]
          for (const [query, field] of cases) {
            const error = yield* failure(() => client.models.list(query))
            expect(error, JSON.stringify(query)).toBeInstanceOf(Anthropic.BadRequestError)
            expect((error as ApiError).error, JSON.stringify(query)).toEqual({
              type: "error",
              error: { type: "invalid_request_error", message: expect.stringContaining(field) }
            })
          }
          const raw = yield* anthropicFetch("/v1/models?limit=many", { secret: key.secret })
          expect(raw.status).toBe(400)
          expect(raw.body.error.message).toContain("limit")
        }))

      it.effect("a key sees only the models it may use: 404 not_found_error for another, 403 without models:read", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const registered = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200).items
          const loopChat = registered.find((model: any) => model.providerModel === "loop-chat").id
          const limited = yield* clientFor(
            (yield* createKey(user, ["models:read", "models:use"], { models: [loopChat] })).secret
          )
          expect((yield* everyModel(limited)).map((model) => model.id)).toEqual(["loop-chat"])
          for (const model of ["llama-loop:1b", "no-such-model"]) {
            const error = yield* failure(() => limited.models.retrieve(model))
            expect(error).toBeInstanceOf(Anthropic.NotFoundError)
            expect((error as ApiError).error).toEqual({
              type: "error",
              error: {
                type: "not_found_error",
                message: `The model '${model}' does not exist or you do not have access to it.`
              }
            })
          }
          // A model it may not see is no cursor either, as an unknown one.
          const hidden = yield* failure(() => limited.models.list({ after_id: "llama-loop:1b" }))
          expect(hidden).toBeInstanceOf(Anthropic.BadRequestError)

          const useOnly = yield* clientFor((yield* createKey(user, ["models:use"])).secret)
          const reads: ReadonlyArray<() => Promise<unknown>> = [
            () => useOnly.models.list(),
            () => useOnly.models.retrieve("loop-chat")
          ]
          for (const run of reads) {
            const error = yield* failure(run)
            expect(error).toBeInstanceOf(Anthropic.PermissionDeniedError)
            expect((error as ApiError).type).toBe("permission_error")
          }

          yield* refusedWithoutKey("/v1/models", undefined, (client) => client.models.retrieve("loop-chat"))
        }))
    })

    describe("token counts", () => {
      it.effect("an Anthropic model's count is Anthropic's own, its prompt sent as Anthropic takes it", () =>
        Effect.gen(function*() {
          const { anthropic, key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const counted = yield* promise(() =>
            client.messages.countTokens({
              model: "claude-loop",
              system: "Be brief.",
              messages: [
                { role: "user", content: "Weather in Paris?" },
                { role: "assistant", content: [{ type: "text", text: "Let me look." }] },
                { role: "user", content: [{ type: "text", text: "Please." }] }
              ],
              tools: [weatherTool],
              tool_choice: { type: "auto" }
            })
          )
          const sent = countRequests(anthropic).at(-1)!
          expect(sent.headers["x-api-key"]).toBe(anthropic.apiKey)
          expect(sent.body).toEqual({
            model: "claude-loop",
            system: "Be brief.",
            messages: [
              { role: "user", content: "Weather in Paris?" },
              { role: "assistant", content: "Let me look." },
              { role: "user", content: "Please." }
            ],
            tools: [weatherTool],
            tool_choice: { type: "auto" }
          })
          // Passed on as Anthropic counted it (the loopback counts its own way, unlike the estimate).
          expect(counted).toEqual({ input_tokens: countedTokens(sent.body) })
          const estimate = estimatePromptTokens({
            messages: [
              { role: "system", content: "Be brief." },
              { role: "user", content: "Weather in Paris?" },
              { role: "assistant", content: "Let me look." },
              { role: "user", content: "Please." }
            ],
            tools: [{
              name: weatherTool.name,
              description: weatherTool.description,
              parameters: weatherTool.input_schema
            }]
          })
          expect(counted.input_tokens).not.toBe(estimate)
        }))

      it.effect("other models' count is the estimate that trims chats, growing with the prompt and its tools", () =>
        Effect.gen(function*() {
          const { key, ollama, openai } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const requests = openai.requests.length + ollama.requests.length
          for (const model of ["loop-chat", "llama-loop:1b"]) {
            const count = (params: Omit<Anthropic.MessageCountTokensParams, "model">) =>
              Effect.map(
                promise(() => client.messages.countTokens({ model, ...params })),
                (counted) => counted.input_tokens
              )
            const short = yield* count({ messages: hi })
            expect(short).toBe(estimatePromptTokens({ messages: [{ role: "user", content: "Hi" }] }))
            expect(short).toBeGreaterThan(0)
            const longer = yield* count({
              system: "Answer in English.",
              messages: [...hi, { role: "assistant", content: "Hello!" }, { role: "user", content: "How are you?" }]
            })
            expect(longer).toBe(estimatePromptTokens({
              messages: [
                { role: "system", content: "Answer in English." },
                { role: "user", content: "Hi" },
                { role: "assistant", content: "Hello!" },
                { role: "user", content: "How are you?" }
              ]
            }))
            expect(longer).toBeGreaterThan(short)
            const withTools = yield* count({ messages: hi, tools: [weatherTool] })
            expect(withTools).toBe(estimatePromptTokens({
              messages: [{ role: "user", content: "Hi" }],
              tools: [{
                name: weatherTool.name,
                description: weatherTool.description,
                parameters: weatherTool.input_schema
              }]
            }))
            expect(withTools).toBeGreaterThan(short)
          }
          // Counted here: neither provider was asked anything.
          expect(openai.requests.length + ollama.requests.length).toBe(requests)
        }))

      it.effect("needs no token budget and records no usage", () =>
        Effect.gen(function*() {
          const { anthropic, openai, user } = yield* TheCast
          const budgeted = yield* createKey(user, ["models:use"], { tokenBudget: 5 })
          const client = yield* clientFor(budgeted.secret)
          openai.chat = { text: ["Spent"], usage: { promptTokens: 7, completionTokens: 1 } }
          yield* promise(() => client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi }))
          expect(yield* failure(() => client.messages.create({ model: "loop-chat", max_tokens: 5, messages: hi })))
            .toBeInstanceOf(Anthropic.RateLimitError)
          for (const model of ["loop-chat", "claude-loop"]) {
            const counted = yield* promise(() => client.messages.countTokens({ model, messages: hi }))
            expect(counted.input_tokens).toBeGreaterThan(0)
          }
          expect(countRequests(anthropic).at(-1)!.body.model).toBe("claude-loop")
          const usage = yield* keyUsageOf(user, budgeted.id, 1)
          expect(usage).toMatchObject({ requests: 1, promptTokens: 7, completionTokens: 1 })
        }))

      it.effect("errors as for messages: 400 naming the field, 401, 403, 404 for a model the key may not use", () =>
        Effect.gen(function*() {
          const { anthropic, key, user } = yield* TheCast
          const client = yield* clientFor(key.secret)
          const asked = countRequests(anthropic).length
          const cases: ReadonlyArray<[unknown, string]> = [
            [{ model: "claude-loop" }, "messages"],
            [{ model: "claude-loop", messages: [] }, "messages"],
            [{ messages: hi }, "model"],
            [{ model: "claude-loop", messages: [{ role: "robot", content: "Hi" }] }, "messages[0].role"],
            [{
              model: "claude-loop",
              messages: [{ role: "user", content: [{ type: "image", source: { type: "url", url: "https://x" } }] }]
            }, "messages[0].content[0].source.type"],
            [{ model: "claude-loop", messages: hi, tools: [{ ...weatherTool, name: "no spaces" }] }, "tools[0].name"],
            [{ model: "claude-loop", messages: hi, tool_choice: { type: "any" } }, "tool_choice"],
            [{
              model: "claude-loop",
              messages: hi,
              tools: [weatherTool],
              tool_choice: { type: "tool", name: "get_time" }
            }, "tool_choice"]
          ]
          for (const [body, field] of cases) {
            const error = yield* failure(() => client.messages.countTokens(body as never))
            expect(error, JSON.stringify(body)).toBeInstanceOf(Anthropic.BadRequestError)
            expect((error as ApiError).error, JSON.stringify(body)).toEqual({
              type: "error",
              error: { type: "invalid_request_error", message: expect.stringContaining(field) }
            })
          }
          const notJson = yield* anthropicFetch(countTokensPath, { secret: key.secret, body: "{" })
          expect(notJson.status).toBe(400)
          // Nothing reached the provider.
          expect(countRequests(anthropic).length).toBe(asked)

          yield* refusedWithoutKey(
            countTokensPath,
            { model: "claude-loop", messages: hi },
            (client) => client.messages.countTokens({ model: "claude-loop", messages: hi })
          )

          const readOnly = yield* clientFor((yield* createKey(user, ["models:read"])).secret)
          const forbidden = yield* failure(() => readOnly.messages.countTokens({ model: "claude-loop", messages: hi }))
          expect(forbidden).toBeInstanceOf(Anthropic.PermissionDeniedError)
          expect((forbidden as ApiError).type).toBe("permission_error")

          const registered = expectStatus(yield* call("GET", "/api/v1/models", { auth: user.accessToken }), 200).items
          const loopChat = registered.find((model: any) => model.providerModel === "loop-chat").id
          const limited = yield* clientFor((yield* createKey(user, ["models:use"], { models: [loopChat] })).secret)
          for (const model of ["claude-loop", "no-such-model"]) {
            const error = yield* failure(() => limited.messages.countTokens({ model, messages: hi }))
            expect(error).toBeInstanceOf(Anthropic.NotFoundError)
            expect((error as ApiError).error).toEqual({
              type: "error",
              error: {
                type: "not_found_error",
                message: `The model '${model}' does not exist or you do not have access to it.`
              }
            })
          }
          expect(countRequests(anthropic).length).toBe(asked)
        }))

      it.effect("Anthropic failing to count: an api_error status, never the upstream body", () =>
        Effect.gen(function*() {
          const { anthropic, key } = yield* TheCast
          const client = yield* clientFor(key.secret)
          anthropic.faults.set(countTokensPath, { kind: "status", status: 500, times: 1 })
          const error = yield* failure(() => client.messages.countTokens({ model: "claude-loop", messages: hi }))
          expect(error).toBeInstanceOf(Anthropic.InternalServerError)
          expect(error).toMatchObject({ status: 502, type: "api_error" })
          expect(JSON.stringify((error as ApiError).error)).not.toContain(upstreamSecret)
          anthropic.faults.set(countTokensPath, {
            kind: "status",
            status: 429,
            times: 1,
            headers: { "retry-after": "3" }
          })
          const limited = yield* failure(() => client.messages.countTokens({ model: "claude-loop", messages: hi }))
          expect(limited).toMatchObject({ status: 502, type: "api_error" })
          expect((limited as ApiError).headers?.get("retry-after")).toBe("3")
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
            const stream = await client.messages.create({
              model: "loop-chat",
              max_tokens: 5,
              messages: hi,
              stream: true
            })
            for await (const event of stream) {
              // Leaving the loop aborts the client's request.
              if (event.type === "content_block_delta" && event.delta.type === "text_delta") return event.delta.text
            }
            return ""
          })
          expect(first).toBe("Thinking")
          yield* waitFor(() => openai.cutShort > before, "the provider's connection to close")
        }))
    })
  })
}

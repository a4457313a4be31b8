/**
 * Ollama's own API: `GET /api/tags` (installed models), `GET /api/ps` (loaded
 * models), `POST /api/show` (details, context length), `POST /api/generate`
 * with `keep_alive` to load (-1: until unloaded) or unload (0),
 * `POST /api/pull` streaming NDJSON progress, `POST /api/chat` streaming
 * NDJSON answer lines (the last one `done: true`, with the token counts), and
 * `POST /api/embed` embedding a batch of texts (token arrays are not taken).
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Option, Schema, Stream } from "effect"
import * as Crypto from "node:crypto"
import { ProviderError } from "../Models/Errors.js"
import type { ChatChunk, ChatMessage, ChatRequest } from "./Chat.js"
import {
  argumentsObject,
  decodePiece,
  type DiscoveredModel,
  joinUrl,
  type OpenAnswer,
  openAnswer,
  type ProviderClient,
  type ProviderConnection,
  reportedError,
  requestJson,
  requestNdjson,
  requestVoid,
  streamOf,
  type StreamTimeouts,
  withBearer
} from "./Client.js"
import { countMismatch, type Embedder, inputCount, textOnly } from "./Embeddings.js"

const TagsResponse = Schema.Struct({
  models: Schema.Array(Schema.Struct({
    name: Schema.String,
    model: Schema.optional(Schema.String),
    size: Schema.optional(Schema.Number),
    digest: Schema.optional(Schema.String),
    details: Schema.optional(Schema.Struct({
      family: Schema.optional(Schema.NullOr(Schema.String)),
      parameter_size: Schema.optional(Schema.NullOr(Schema.String)),
      quantization_level: Schema.optional(Schema.NullOr(Schema.String))
    }))
  }))
})

const PsResponse = Schema.Struct({
  models: Schema.Array(Schema.Struct({ name: Schema.String, model: Schema.optional(Schema.String) }))
})

const ShowResponse = Schema.Struct({
  model_info: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  capabilities: Schema.optional(Schema.Array(Schema.String))
})

const PullLine = Schema.Struct({
  status: Schema.optional(Schema.String),
  total: Schema.optional(Schema.Number),
  completed: Schema.optional(Schema.Number),
  error: Schema.optional(Schema.String)
})

const ChatLine = Schema.Struct({
  message: Schema.optional(Schema.Struct({
    content: Schema.optional(Schema.String),
    tool_calls: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
      id: Schema.optional(Schema.String),
      function: Schema.Struct({ name: Schema.String, arguments: Schema.optional(Schema.Unknown) })
    }))))
  })),
  done: Schema.optional(Schema.Boolean),
  done_reason: Schema.optional(Schema.NullOr(Schema.String)),
  prompt_eval_count: Schema.optional(Schema.Int),
  eval_count: Schema.optional(Schema.Int),
  error: Schema.optional(Schema.Unknown)
})

const EmbedResponse = Schema.Struct({
  embeddings: Schema.Array(Schema.Array(Schema.Number)),
  prompt_eval_count: Schema.optional(Schema.NullOr(Schema.Int))
})

/**
 * Ollama names the tool a result answers, not the call: the name is found from the call's id, among
 * the calls made before the result (answers stored before ids were unique repeat `call_0`, …).
 */
const toMessages = (messages: ReadonlyArray<ChatMessage>) => {
  const toolNames = new Map<string, string>()
  return messages.map((message) => {
    for (const call of message.toolCalls ?? []) toolNames.set(call.id, call.name)
    return message.role === "tool"
      ? { role: "tool", content: message.content, tool_name: toolNames.get(message.toolCallId ?? "") }
      : {
        role: message.role,
        content: message.content,
        images: message.images?.length ? message.images.map((image) => image.data) : undefined,
        tool_calls: message.toolCalls?.length
          ? message.toolCalls.map((call) => ({
            function: { name: call.name, arguments: argumentsObject(call.arguments) }
          }))
          : undefined
      }
  })
}

/** Generation parameters go into `options` (with any `options` of `extra`); Ollama has no tool choice. */
const chatBody = (request: ChatRequest) => {
  const { options, ...extra } = request.extra ?? {}
  return {
    tools: request.tools?.length && request.toolChoice !== "none"
      ? request.tools.map((tool) => ({
        type: "function",
        function: { name: tool.name, description: tool.description, parameters: tool.parameters }
      }))
      : undefined,
    ...extra,
    options: {
      ...(typeof options === "object" && options !== null ? options : {}),
      temperature: request.temperature,
      top_p: request.topP,
      num_predict: request.maxTokens,
      stop: request.stop?.length ? request.stop : undefined
    },
    model: request.model,
    messages: toMessages(request.messages),
    stream: true
  }
}

/** `llama.context_length`, `qwen2.context_length`, …: the architecture prefixes the key. */
const contextLengthOf = (info: Record<string, unknown> | undefined): number | null => {
  for (const [key, value] of Object.entries(info ?? {})) {
    if (key.endsWith(".context_length") && typeof value === "number" && Number.isInteger(value) && value > 0) {
      return value
    }
  }
  return null
}

export const make = (
  http: HttpClient.HttpClient,
  connection: ProviderConnection,
  timeouts: StreamTimeouts
): ProviderClient => {
  const url = (path: string) => joinUrl(connection.baseUrl, path)
  const get = (path: string) => withBearer(connection)(HttpClientRequest.get(url(path)))
  const post = (path: string, body: unknown) =>
    withBearer(connection)(HttpClientRequest.bodyUnsafeJson(HttpClientRequest.post(url(path)), body))

  const tags = requestJson(http, connection, get("/api/tags"), TagsResponse)

  const describe = (model: string) =>
    Effect.map(
      requestJson(http, connection, post("/api/show", { model }), ShowResponse),
      (show): DiscoveredModel => ({
        providerModel: model,
        displayName: model,
        contextWindow: contextLengthOf(show.model_info),
        capabilities: show.capabilities ?? ["completion"],
        metadata: {}
      })
    )

  const listModels = Effect.flatMap(tags, ({ models }) =>
    Effect.forEach(models, (entry) =>
      // Details are a bonus: a model whose `show` fails is still listed.
      describe(entry.name).pipe(
        Effect.orElseSucceed(() => ({ contextWindow: null, capabilities: ["completion"] })),
        Effect.map((details): DiscoveredModel => ({
          providerModel: entry.name,
          displayName: entry.name,
          contextWindow: details.contextWindow,
          capabilities: details.capabilities,
          metadata: {
            ...(entry.size !== undefined ? { sizeBytes: entry.size } : {}),
            ...(entry.digest !== undefined ? { digest: entry.digest } : {}),
            ...(entry.details?.family ? { family: entry.details.family } : {}),
            ...(entry.details?.parameter_size ? { parameterSize: entry.details.parameter_size } : {}),
            ...(entry.details?.quantization_level ? { quantization: entry.details.quantization_level } : {})
          }
        }))
      ), { concurrency: 4 }))

  const decodeLine = decodePiece(connection, ChatLine)

  /**
   * How the pieces of one answer become chunks, with the answer's own state. Apart from `answer`,
   * whose context holds the request: the translator lives as long as the answer streams.
   */
  const translator = () => {
    let toolCalls = 0
    // Ollama gives calls no id: each gets one of its own, so that a result maps back to its call
    // across turns (numbering them per answer repeated `call_0` in every answer).
    const idPrefix = `call_${Crypto.randomBytes(9).toString("base64url")}`
    const translate = (text: string): ReadonlyArray<ChatChunk> | ProviderError => {
      const line = decodeLine(text)
      if (line instanceof ProviderError) return line
      if (line.error !== undefined) return reportedError(connection)
      const out: Array<ChatChunk> = []
      if (line.message?.content) out.push({ _tag: "text", text: line.message.content })
      for (const call of line.message?.tool_calls ?? []) {
        const index = toolCalls++
        const args = call.function.arguments
        out.push({
          _tag: "tool-call",
          index,
          id: call.id ?? `${idPrefix}_${index}`,
          name: call.function.name,
          arguments: typeof args === "string" ? args : JSON.stringify(args ?? {})
        })
      }
      if (line.done) {
        out.push(
          { _tag: "usage", promptTokens: line.prompt_eval_count ?? 0, completionTokens: line.eval_count ?? 0 },
          {
            _tag: "finish",
            reason: toolCalls > 0 ? "tool_calls" : line.done_reason === "length" ? "length" : "stop"
          }
        )
      }
      return out
    }
    return translate
  }

  const answer: OpenAnswer = (request) =>
    Effect.suspend(() =>
      openAnswer(connection, post("/api/chat", chatBody(request)), {
        framing: "ndjson",
        timeouts,
        translate: translator()
      })
    )

  const embedder: Embedder = {
    refusal: textOnly(connection.name),
    embed: (request) =>
      Effect.flatMap(
        requestJson(
          http,
          connection,
          post("/api/embed", {
            model: request.model,
            input: request.input._tag === "texts" ? request.input.texts : [],
            ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {})
          }),
          EmbedResponse,
          connection.requestTimeoutMs
        ),
        ({ embeddings, prompt_eval_count }) => {
          const expected = inputCount(request.input)
          return embeddings.length === expected
            ? Effect.succeed({ vectors: embeddings, promptTokens: prompt_eval_count ?? 0 })
            : Effect.fail(countMismatch(connection, expected, embeddings.length))
        }
      )
  }

  return {
    chat: streamOf(answer),
    answer,
    listModels,
    embedder: Option.some(embedder),
    tokenCounter: Option.none(),
    ping: Effect.asVoid(tags),
    runtime: Option.some({
      running: Effect.map(
        requestJson(http, connection, get("/api/ps"), PsResponse),
        ({ models }) => models.map((entry) => entry.name)
      ),
      load: (model) =>
        requestVoid(
          http,
          connection,
          post("/api/generate", { model, keep_alive: -1, stream: false }),
          connection.requestTimeoutMs
        ),
      unload: (model) =>
        requestVoid(
          http,
          connection,
          post("/api/generate", { model, keep_alive: 0, stream: false }),
          connection.requestTimeoutMs
        ),
      pull: (model) =>
        requestNdjson(
          http,
          connection,
          post("/api/pull", { model, stream: true }),
          PullLine,
          connection.requestTimeoutMs
        )
          .pipe(Stream.mapEffect((line) =>
            line.error !== undefined
              ? Effect.fail(
                new ProviderError({ message: `${connection.name} could not pull ${model}`, upstreamStatus: null })
              )
              : Effect.succeed({
                status: line.status ?? "",
                total: line.total ?? null,
                completed: line.completed ?? null
              })
          )),
      describe
    })
  }
}

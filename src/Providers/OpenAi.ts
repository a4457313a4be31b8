/**
 * OpenAI's API and the servers that copy it (vLLM, llama.cpp server, LM
 * Studio, OpenRouter, Groq…): `GET /v1/models` with a bearer credential, and
 * `POST /v1/chat/completions` streamed as server-sent events (`data: {…}`
 * chunks, then `data: [DONE]`). Context windows are read where a server
 * reports them (`context_length`, `max_model_len`, `context_window`).
 * `POST /v1/embeddings` embeds texts or token arrays, the vectors asked for
 * as floats.
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Option, Schema } from "effect"
import { ProviderError } from "../Models/Errors.js"
import type { ChatChunk, ChatMessage, ChatRequest, FinishReason } from "./Chat.js"
import {
  decodePiece,
  type DiscoveredModel,
  joinUrl,
  type OpenAnswer,
  openAnswer,
  postJson,
  type ProviderClient,
  type ProviderConnection,
  reportedError,
  requestJson,
  streamOf,
  type StreamTimeouts,
  withBearer
} from "./Client.js"
import { countMismatch, type Embedder, type EmbedRequest, inputCount } from "./Embeddings.js"

const ModelsResponse = Schema.Struct({
  data: Schema.Array(Schema.Struct({
    id: Schema.String,
    owned_by: Schema.optional(Schema.NullOr(Schema.String)),
    created: Schema.optional(Schema.NullOr(Schema.Number)),
    context_length: Schema.optional(Schema.NullOr(Schema.Number)),
    max_model_len: Schema.optional(Schema.NullOr(Schema.Number)),
    context_window: Schema.optional(Schema.NullOr(Schema.Number))
  }))
})

const StreamChunk = Schema.Struct({
  choices: Schema.optional(Schema.Array(Schema.Struct({
    index: Schema.optional(Schema.Int),
    delta: Schema.optional(Schema.NullOr(Schema.Struct({
      content: Schema.optional(Schema.NullOr(Schema.String)),
      tool_calls: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({
        index: Schema.Int,
        id: Schema.optional(Schema.NullOr(Schema.String)),
        function: Schema.optional(Schema.NullOr(Schema.Struct({
          name: Schema.optional(Schema.NullOr(Schema.String)),
          arguments: Schema.optional(Schema.NullOr(Schema.String))
        })))
      }))))
    }))),
    finish_reason: Schema.optional(Schema.NullOr(Schema.String))
  }))),
  usage: Schema.optional(Schema.NullOr(Schema.Struct({ prompt_tokens: Schema.Int, completion_tokens: Schema.Int }))),
  // Some compatible servers report a failure inside the stream instead of with a status.
  error: Schema.optional(Schema.Unknown)
})

const EmbeddingsResponse = Schema.Struct({
  data: Schema.Array(Schema.Struct({ index: Schema.Int, embedding: Schema.Array(Schema.Number) })),
  // Some compatible servers leave the usage out.
  usage: Schema.optional(Schema.NullOr(Schema.Struct({ prompt_tokens: Schema.Int })))
})

const finishReasons: Record<string, FinishReason> = {
  stop: "stop",
  length: "length",
  tool_calls: "tool_calls",
  function_call: "tool_calls",
  content_filter: "content_filter"
}

const toMessage = (message: ChatMessage) =>
  message.role === "tool"
    ? { role: "tool", tool_call_id: message.toolCallId, content: message.content }
    : message.toolCalls?.length
    ? {
      role: message.role,
      content: message.content.length > 0 ? message.content : null,
      tool_calls: message.toolCalls.map((call) => ({
        id: call.id,
        type: "function",
        function: { name: call.name, arguments: call.arguments }
      }))
    }
    : message.images?.length
    ? {
      role: message.role,
      content: [
        { type: "text", text: message.content },
        ...message.images.map((image) => ({
          type: "image_url",
          image_url: { url: `data:${image.mediaType};base64,${image.data}` }
        }))
      ]
    }
    : { role: message.role, content: message.content }

/** The request body; `extra` may add or override generation parameters, never what the server sets. */
const chatBody = (request: ChatRequest) => ({
  temperature: request.temperature,
  top_p: request.topP,
  max_tokens: request.maxTokens,
  stop: request.stop?.length ? request.stop : undefined,
  tools: request.tools?.length
    ? request.tools.map((tool) => ({
      type: "function",
      function: { name: tool.name, description: tool.description, parameters: tool.parameters }
    }))
    : undefined,
  tool_choice: typeof request.toolChoice === "object"
    ? { type: "function", function: { name: request.toolChoice.name } }
    : request.toolChoice,
  ...request.extra,
  model: request.model,
  messages: request.messages.map(toMessage),
  stream: true,
  stream_options: { include_usage: true }
})

const embeddingsBody = (request: EmbedRequest) => ({
  model: request.model,
  input: request.input._tag === "texts" ? request.input.texts : request.input.tokens,
  ...(request.dimensions !== undefined ? { dimensions: request.dimensions } : {}),
  encoding_format: "float"
})

const positiveInt = (value: number | null | undefined): number | null =>
  typeof value === "number" && Number.isInteger(value) && value > 0 ? value : null

export const make = (
  http: HttpClient.HttpClient,
  connection: ProviderConnection,
  timeouts: StreamTimeouts
): ProviderClient => {
  const models = requestJson(
    http,
    connection,
    withBearer(connection)(HttpClientRequest.get(joinUrl(connection.baseUrl, "/v1/models"))),
    ModelsResponse
  )
  const decode = decodePiece(connection, StreamChunk)

  /**
   * How the pieces of one answer become chunks, with the answer's own state. Apart from `answer`,
   * whose context holds the request: the translator lives as long as the answer streams.
   */
  const translator = () => {
    // The finish reason comes before the usage chunk; `finish` must be the last chunk.
    let finish: FinishReason | undefined
    const finishChunk = (): Array<ChatChunk> => finish ? [{ _tag: "finish", reason: finish }] : []
    const translate = (data: string): ReadonlyArray<ChatChunk> | ProviderError => {
      if (data.trim() === "[DONE]") return finishChunk()
      const chunk = decode(data)
      if (chunk instanceof ProviderError) return chunk
      if (chunk.error !== undefined) return reportedError(connection)
      const out: Array<ChatChunk> = []
      // One answer is asked for; an `n` in `extra` does not interleave others into it.
      const choice = chunk.choices?.find((candidate) => (candidate.index ?? 0) === 0)
      if (choice?.delta?.content) out.push({ _tag: "text", text: choice.delta.content })
      for (const call of choice?.delta?.tool_calls ?? []) {
        out.push({
          _tag: "tool-call",
          index: call.index,
          ...(call.id ? { id: call.id } : {}),
          ...(call.function?.name ? { name: call.function.name } : {}),
          arguments: call.function?.arguments ?? ""
        })
      }
      if (choice?.finish_reason) finish = finishReasons[choice.finish_reason] ?? "stop"
      if (chunk.usage) {
        out.push({
          _tag: "usage",
          promptTokens: chunk.usage.prompt_tokens,
          completionTokens: chunk.usage.completion_tokens
        })
      }
      return out
    }
    return { translate, trailer: finishChunk }
  }

  const answer: OpenAnswer = (request) =>
    Effect.suspend(() =>
      openAnswer(
        connection,
        withBearer(connection)(postJson(connection, "/v1/chat/completions", chatBody(request))),
        { framing: "sse", timeouts, ...translator() }
      )
    )

  const embedder: Embedder = {
    // Token arrays are OpenAI's own input too.
    refusal: () => undefined,
    embed: (request) =>
      Effect.flatMap(
        requestJson(
          http,
          connection,
          withBearer(connection)(postJson(connection, "/v1/embeddings", embeddingsBody(request))),
          EmbeddingsResponse,
          connection.requestTimeoutMs
        ),
        ({ data, usage }) => {
          // In the inputs' order, each input's vector once.
          const vectors = [...data].sort((a, b) => a.index - b.index)
          const expected = inputCount(request.input)
          return vectors.length === expected && vectors.every((entry, position) => entry.index === position)
            ? Effect.succeed({
              vectors: vectors.map((entry) => entry.embedding),
              promptTokens: usage?.prompt_tokens ?? 0
            })
            : Effect.fail(countMismatch(connection, expected, data.length))
        }
      )
  }

  return {
    chat: streamOf(answer),
    answer,
    listModels: Effect.map(models, ({ data }) =>
      data.map((entry): DiscoveredModel => ({
        providerModel: entry.id,
        displayName: entry.id,
        contextWindow: positiveInt(entry.context_length ?? entry.max_model_len ?? entry.context_window),
        capabilities: ["completion"],
        metadata: entry.owned_by ? { ownedBy: entry.owned_by } : {}
      }))),
    ping: Effect.asVoid(models),
    runtime: Option.none(),
    embedder: Option.some(embedder),
    tokenCounter: Option.none()
  }
}

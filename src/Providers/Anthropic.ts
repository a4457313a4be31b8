/**
 * Anthropic's API: `GET /v1/models` with `x-api-key` and
 * `anthropic-version: 2023-06-01`, paginated (`has_more`, `last_id`,
 * `after_id`), `POST /v1/messages` streamed as server-sent events
 * (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `error`),
 * and `POST /v1/messages/count_tokens`, the exact count of a prompt's tokens.
 */
import { type HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Option, Redacted, Schema } from "effect"
import { ProviderError } from "../Models/Errors.js"
import type { ChatChunk, ChatMessage, ChatRequest, FinishReason } from "./Chat.js"
import {
  argumentsObject,
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
  type TokenCounter
} from "./Client.js"

export const anthropicVersion = "2023-06-01"

const ModelsPage = Schema.Struct({
  data: Schema.Array(Schema.Struct({
    id: Schema.String,
    display_name: Schema.optional(Schema.NullOr(Schema.String)),
    created_at: Schema.optional(Schema.NullOr(Schema.String))
  })),
  has_more: Schema.optional(Schema.Boolean),
  last_id: Schema.optional(Schema.NullOr(Schema.String))
})

/** Anthropic requires `max_tokens`; this is what a request without a limit gets. */
export const defaultMaxTokens = 4096

const Usage = Schema.Struct({
  input_tokens: Schema.optional(Schema.NullOr(Schema.Int)),
  cache_creation_input_tokens: Schema.optional(Schema.NullOr(Schema.Int)),
  cache_read_input_tokens: Schema.optional(Schema.NullOr(Schema.Int)),
  output_tokens: Schema.optional(Schema.NullOr(Schema.Int))
})

/** Prompt tokens, cached ones included. */
const inputTokens = (usage: typeof Usage.Type) =>
  (usage.input_tokens ?? 0) + (usage.cache_creation_input_tokens ?? 0) + (usage.cache_read_input_tokens ?? 0)

const StreamEvent = Schema.Union(
  Schema.Struct({ type: Schema.Literal("message_start"), message: Schema.Struct({ usage: Schema.optional(Usage) }) }),
  Schema.Struct({
    type: Schema.Literal("content_block_start"),
    index: Schema.Int,
    content_block: Schema.Struct({
      type: Schema.String,
      text: Schema.optional(Schema.String),
      id: Schema.optional(Schema.String),
      name: Schema.optional(Schema.String)
    })
  }),
  Schema.Struct({
    type: Schema.Literal("content_block_delta"),
    index: Schema.Int,
    delta: Schema.Struct({
      type: Schema.String,
      text: Schema.optional(Schema.String),
      partial_json: Schema.optional(Schema.String)
    })
  }),
  Schema.Struct({
    type: Schema.Literal("message_delta"),
    delta: Schema.Struct({
      stop_reason: Schema.optional(Schema.NullOr(Schema.String)),
      stop_sequence: Schema.optional(Schema.NullOr(Schema.String))
    }),
    usage: Schema.optional(Usage)
  }),
  Schema.Struct({
    type: Schema.Literal("error"),
    error: Schema.optionalWith(Schema.Struct({ type: Schema.optionalWith(Schema.String, { default: () => "" }) }), {
      default: () => ({ type: "" })
    })
  }),
  // `ping`, `content_block_stop`, `message_stop`, and the event types Anthropic may add later.
  Schema.Struct({ type: Schema.String })
)

const finishReasons: Record<string, FinishReason> = {
  end_turn: "stop",
  stop_sequence: "stop",
  pause_turn: "stop",
  max_tokens: "length",
  tool_use: "tool_calls",
  refusal: "content_filter"
}

/** The HTTP status Anthropic documents for each error type, so an error event is retried like that status. */
const errorStatuses: Record<string, number> = { overloaded_error: 529, api_error: 500, rate_limit_error: 429 }

const toMessage = (message: ChatMessage) =>
  message.role === "tool"
    ? { role: "user", content: [{ type: "tool_result", tool_use_id: message.toolCallId, content: message.content }] }
    : message.toolCalls?.length
    ? {
      role: message.role,
      content: [
        ...(message.content.length > 0 ? [{ type: "text", text: message.content }] : []),
        ...message.toolCalls.map((call) => ({
          type: "tool_use",
          id: call.id,
          name: call.name,
          input: argumentsObject(call.arguments)
        }))
      ]
    }
    : message.images?.length
    ? {
      role: message.role,
      // Anthropic reads a question best with its images before its text.
      content: [
        ...message.images.map((image) => ({
          type: "image",
          source: { type: "base64", media_type: image.mediaType, data: image.data }
        })),
        { type: "text", text: message.content }
      ]
    }
    : { role: message.role, content: message.content }

const toolChoiceOf = (choice: ChatRequest["toolChoice"]) =>
  choice === undefined
    ? undefined
    : typeof choice === "object"
    ? { type: "tool", name: choice.name }
    : { type: choice === "required" ? "any" : choice }

/** The tools offered, as Anthropic takes them. */
const toolsBody = (request: ChatRequest) => ({
  tools: request.tools?.length
    ? request.tools.map((tool) => ({
      name: tool.name,
      description: tool.description,
      input_schema: tool.parameters
    }))
    : undefined,
  tool_choice: request.tools?.length ? toolChoiceOf(request.toolChoice) : undefined
})

/** The model and the prompt: system messages go into `system`. */
const promptBody = (request: ChatRequest) => {
  const system = request.messages.filter((message) => message.role === "system").map((message) => message.content)
  return {
    model: request.model,
    system: system.length > 0 ? system.join("\n\n") : undefined,
    messages: request.messages.filter((message) => message.role !== "system").map(toMessage)
  }
}

/** `extra` may add or override generation parameters and tools, not the model or the prompt. */
const chatBody = (request: ChatRequest) => ({
  max_tokens: request.maxTokens ?? defaultMaxTokens,
  temperature: request.temperature,
  top_p: request.topP,
  stop_sequences: request.stop?.length ? request.stop : undefined,
  ...toolsBody(request),
  ...request.extra,
  ...promptBody(request),
  stream: true
})

/** `count_tokens` takes the prompt and the tools only: Anthropic refuses generation parameters there. */
const countBody = (request: ChatRequest) => ({ ...toolsBody(request), ...promptBody(request) })

const TokensCount = Schema.Struct({ input_tokens: Schema.Int })

/** More pages than any real listing has: a provider that never stops paginating is broken. */
const maxPages = 50

export const make = (
  http: HttpClient.HttpClient,
  connection: ProviderConnection,
  timeouts: StreamTimeouts
): ProviderClient => {
  const withHeaders = HttpClientRequest.setHeaders({
    "anthropic-version": anthropicVersion,
    ...(connection.credential._tag === "Some" ? { "x-api-key": Redacted.value(connection.credential.value) } : {})
  })

  const page = (afterId: string | null) =>
    requestJson(
      http,
      connection,
      HttpClientRequest.get(joinUrl(connection.baseUrl, "/v1/models")).pipe(
        HttpClientRequest.setUrlParams({ limit: "1000", ...(afterId ? { after_id: afterId } : {}) }),
        withHeaders
      ),
      ModelsPage
    )

  const listModels = Effect.gen(function*() {
    const models: Array<DiscoveredModel> = []
    let afterId: string | null = null
    for (let pages = 0; pages < maxPages; pages++) {
      const answer: typeof ModelsPage.Type = yield* page(afterId)
      for (const entry of answer.data) {
        models.push({
          providerModel: entry.id,
          displayName: entry.display_name ?? entry.id,
          contextWindow: null,
          capabilities: ["completion", "vision"],
          metadata: entry.created_at ? { createdAt: entry.created_at } : {}
        })
      }
      if (!answer.has_more || !answer.last_id) return models
      afterId = answer.last_id
    }
    return yield* new ProviderError({ message: `${connection.name} paginates without end`, upstreamStatus: null })
  })

  const decode = decodePiece(connection, StreamEvent)

  /**
   * How the pieces of one answer become chunks, with the answer's own state. Apart from `answer`,
   * whose context holds the request: the translator lives as long as the answer streams.
   */
  const translator = () => {
    let promptTokens = 0
    let finish: FinishReason = "stop"
    let stopSequence: string | undefined
    // Content blocks are numbered with the text blocks; tool calls are numbered among themselves.
    const toolIndexOfBlock = new Map<number, number>()
    const translate = (data: string): ReadonlyArray<ChatChunk> | ProviderError => {
      const event = decode(data)
      if (event instanceof ProviderError) return event
      // Told apart by their fields: events of types this adapter does not know decode too.
      if ("message" in event) {
        promptTokens = event.message.usage ? inputTokens(event.message.usage) : 0
      } else if ("content_block" in event) {
        const block = event.content_block
        if (block.type === "text" && block.text) return [{ _tag: "text", text: block.text }]
        if (block.type === "tool_use") {
          const index = toolIndexOfBlock.size
          toolIndexOfBlock.set(event.index, index)
          return [{ _tag: "tool-call", index, id: block.id, name: block.name, arguments: "" }]
        }
      } else if ("delta" in event && "index" in event) {
        const { delta } = event
        if (delta.type === "text_delta" && delta.text) return [{ _tag: "text", text: delta.text }]
        const index = toolIndexOfBlock.get(event.index)
        if (delta.type === "input_json_delta" && index !== undefined && delta.partial_json) {
          return [{ _tag: "tool-call", index, arguments: delta.partial_json }]
        }
      } else if ("delta" in event) {
        finish = finishReasons[event.delta.stop_reason ?? ""] ?? "stop"
        stopSequence = event.delta.stop_sequence ?? undefined
        if (event.usage) {
          return [{
            _tag: "usage",
            // Counts here are cumulative: input counts, when present, supersede those of `message_start`.
            promptTokens: typeof event.usage.input_tokens === "number" ? inputTokens(event.usage) : promptTokens,
            completionTokens: event.usage.output_tokens ?? 0
          }]
        }
      } else if ("error" in event) {
        return reportedError(connection, errorStatuses[event.error.type] ?? null)
      } else if (event.type === "message_stop") {
        return [{ _tag: "finish", reason: finish, ...(stopSequence !== undefined ? { stopSequence } : {}) }]
      }
      return []
    }
    return translate
  }

  const answer: OpenAnswer = (request) =>
    Effect.suspend(() =>
      openAnswer(connection, withHeaders(postJson(connection, "/v1/messages", chatBody(request))), {
        framing: "sse",
        timeouts,
        translate: translator()
      })
    )

  /** Anthropic's own count (free, and rate limited apart from answers), within the connect timeout like a listing. */
  const countTokens: TokenCounter = (request) =>
    Effect.map(
      requestJson(
        http,
        connection,
        withHeaders(postJson(connection, "/v1/messages/count_tokens", countBody(request))),
        TokensCount
      ),
      (counted) => counted.input_tokens
    )

  return {
    chat: streamOf(answer),
    answer,
    listModels,
    ping: Effect.asVoid(page(null)),
    runtime: Option.none(),
    // Anthropic's API has no embeddings.
    embedder: Option.none(),
    tokenCounter: Option.some(countTokens)
  }
}

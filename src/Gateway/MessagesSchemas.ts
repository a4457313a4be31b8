/**
 * Anthropic's wire format, as far as the gateway speaks it: the Messages API (`POST /v1/messages`:
 * the request it accepts, the message it answers with, the server-sent events of a streamed
 * answer), its token count (`POST /v1/messages/count_tokens`), the models list (`GET /v1/models`
 * with `anthropic-version`) and the error body. Field names are Anthropic's (snake_case), since its SDKs read them as they
 * are. Content blocks are those a chat request can carry: text, base64 images in user turns,
 * `tool_use` in assistant turns and `tool_result` in user turns.
 */
import { Schema } from "effect"

// --- request

const TextBlock = Schema.Struct({
  type: Schema.Literal("text"),
  text: Schema.String
})

/** The image types Anthropic's API takes, as Web+ passes them to every provider. */
const ImageMediaType = Schema.Literal("image/jpeg", "image/png", "image/gif", "image/webp")

const ImageBlock = Schema.Struct({
  type: Schema.Literal("image"),
  source: Schema.Struct({
    type: Schema.Literal("base64").annotations({
      message: () => "Images are accepted as base64 data (source.type 'base64'); URL and file sources are not fetched"
    }),
    media_type: ImageMediaType,
    data: Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9+/=]+$/, { message: () => "Expected base64 data" }))
  })
})

/** What a tool answered: text (images in tool results are not passed on). */
const ToolResultBlock = Schema.Struct({
  type: Schema.Literal("tool_result"),
  tool_use_id: Schema.String,
  content: Schema.optional(
    Schema.Union(
      Schema.Array(TextBlock).annotations({
        message: () => "Expected a string or an array of text blocks (images in tool results are not supported)"
      }),
      Schema.String
    )
  ),
  /** Accepted, not passed on: the providers' chat requests have no such flag. */
  is_error: Schema.optional(Schema.Boolean)
})

const ToolUseBlock = Schema.Struct({
  type: Schema.Literal("tool_use"),
  id: Schema.String,
  name: Schema.String,
  input: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})

/** The model's reasoning from an earlier answer (another server's): accepted in history, not passed on. */
const ThinkingBlock = Schema.Struct({ type: Schema.Literal("thinking", "redacted_thinking") })

const UserBlock = Schema.Union(TextBlock, ImageBlock, ToolResultBlock)
export type UserBlock = typeof UserBlock.Type

const AssistantBlock = Schema.Union(TextBlock, ToolUseBlock, ThinkingBlock)
export type AssistantBlock = typeof AssistantBlock.Type

/** A string, or blocks; the blocks come first so that a bad one is named by its index. */
const contentOf = <B extends Schema.Schema.Any>(block: B) =>
  Schema.Union(
    Schema.Array(block).annotations({ message: () => "Expected a string or an array of content blocks" }),
    Schema.String
  )

const SystemText = contentOf(TextBlock)

const UserMessage = Schema.Struct({ role: Schema.Literal("user"), content: contentOf(UserBlock) })
const AssistantMessage = Schema.Struct({ role: Schema.Literal("assistant"), content: contentOf(AssistantBlock) })
/** What newer SDKs allow among the messages besides `system`: read as a system prompt. */
const SystemMessage = Schema.Struct({ role: Schema.Literal("system"), content: SystemText })

export const MessageParam = Schema.Union(UserMessage, AssistantMessage, SystemMessage)
export type MessageParam = typeof MessageParam.Type

const Tool = Schema.Struct({
  /** Client tools only: Anthropic's server tools (web search, code execution…) run on Anthropic's side. */
  type: Schema.optional(Schema.NullOr(Schema.Literal("custom"))),
  name: Schema.String.pipe(
    Schema.pattern(/^[A-Za-z0-9_-]{1,128}$/, {
      message: () => "A tool name is 1 to 128 letters, digits, underscores or dashes"
    })
  ),
  description: Schema.optional(Schema.String),
  input_schema: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})

const ToolChoice = Schema.Union(
  Schema.Struct({ type: Schema.Literal("auto", "any", "none") }),
  Schema.Struct({ type: Schema.Literal("tool"), name: Schema.String })
)
export type ToolChoice = typeof ToolChoice.Type

const Probability = Schema.Number.pipe(Schema.between(0, 1))

/**
 * `POST /v1/messages`. Fields not listed here are ignored (`metadata`, `cache_control` and the
 * like); `top_k` reaches the providers that have it (Anthropic, Ollama).
 */
export const MessagesRequest = Schema.Struct({
  model: Schema.String,
  max_tokens: Schema.Int.pipe(Schema.greaterThanOrEqualTo(1)),
  messages: Schema.Array(MessageParam).pipe(
    Schema.minItems(1, { message: () => "At least one message is required" })
  ),
  system: Schema.optional(SystemText),
  temperature: Schema.optional(Probability),
  top_p: Schema.optional(Probability),
  top_k: Schema.optional(Schema.Int.pipe(Schema.greaterThanOrEqualTo(1))),
  stop_sequences: Schema.optional(Schema.Array(Schema.String)),
  stream: Schema.optional(Schema.Boolean),
  tools: Schema.optional(Schema.Array(Tool)),
  tool_choice: Schema.optional(ToolChoice)
})
export type MessagesRequest = typeof MessagesRequest.Type

/**
 * `POST /v1/messages/count_tokens`: what a message request says of its prompt (no `max_tokens`,
 * nothing about the answer). Other fields are ignored, as they are for `/v1/messages`.
 */
export const CountTokensRequest = MessagesRequest.pick("model", "messages", "system", "tools", "tool_choice")
export type CountTokensRequest = typeof CountTokensRequest.Type

/** The answer of `count_tokens`. */
export const MessageTokensCount = Schema.Struct({ input_tokens: Schema.Int })
export type MessageTokensCount = typeof MessageTokensCount.Type

// --- models

/** The query of Anthropic's models list: a page of `limit` models, after or before the model a cursor names. */
export const ModelInfoQuery = Schema.Struct({
  limit: Schema.optionalWith(
    Schema.NumberFromString.pipe(
      Schema.int({ message: () => "Expected an integer from 1 to 1000" }),
      Schema.between(1, 1000, { message: () => "Expected an integer from 1 to 1000" })
    ),
    { default: () => 20 }
  ),
  after_id: Schema.optional(Schema.String),
  before_id: Schema.optional(Schema.String)
})
export type ModelInfoQuery = typeof ModelInfoQuery.Type

/** A model as Anthropic's API describes one. */
export const ModelInfo = Schema.Struct({
  type: Schema.Literal("model"),
  /** The model as the gateway names it. */
  id: Schema.String,
  display_name: Schema.String,
  /** RFC 3339: when the model was registered here. */
  created_at: Schema.String
})
export type ModelInfo = typeof ModelInfo.Type

/** One page of the models list; `first_id` and `last_id` are the cursors of the pages before and after it. */
export const ModelInfoPage = Schema.Struct({
  data: Schema.Array(ModelInfo),
  /** Whether more models follow in the direction asked for (after `last_id`; before `first_id` with `before_id`). */
  has_more: Schema.Boolean,
  first_id: Schema.NullOr(Schema.String),
  last_id: Schema.NullOr(Schema.String)
})
export type ModelInfoPage = typeof ModelInfoPage.Type

// --- responses

export const StopReason = Schema.Literal("end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal")
export type StopReason = typeof StopReason.Type

const ResponseTextBlock = Schema.Struct({ type: Schema.Literal("text"), text: Schema.String })

const ResponseToolUseBlock = Schema.Struct({
  type: Schema.Literal("tool_use"),
  id: Schema.String,
  name: Schema.String,
  input: Schema.Record({ key: Schema.String, value: Schema.Unknown })
})

export const ContentBlock = Schema.Union(ResponseTextBlock, ResponseToolUseBlock)
export type ContentBlock = typeof ContentBlock.Type

export const MessageUsage = Schema.Struct({ input_tokens: Schema.Int, output_tokens: Schema.Int })

/** The answer (`stream` off), and the message of a stream's `message_start` (content empty, no stop reason yet). */
export const Message = Schema.Struct({
  id: Schema.String,
  type: Schema.Literal("message"),
  role: Schema.Literal("assistant"),
  /** The model as the gateway names it. */
  model: Schema.String,
  content: Schema.Array(ContentBlock),
  stop_reason: Schema.NullOr(StopReason),
  stop_sequence: Schema.NullOr(Schema.String),
  usage: MessageUsage
})
export type Message = typeof Message.Type

/** One server-sent event of a streamed answer; its `type` is also the event's name. */
export const MessageStreamEvent = Schema.Union(
  Schema.Struct({ type: Schema.Literal("message_start"), message: Message }),
  Schema.Struct({
    type: Schema.Literal("content_block_start"),
    index: Schema.Int,
    content_block: Schema.Union(
      ResponseTextBlock,
      Schema.Struct({
        type: Schema.Literal("tool_use"),
        id: Schema.String,
        name: Schema.String,
        /** Always empty: the input follows as `input_json_delta`s. */
        input: Schema.Struct({})
      })
    )
  }),
  Schema.Struct({
    type: Schema.Literal("content_block_delta"),
    index: Schema.Int,
    delta: Schema.Union(
      Schema.Struct({ type: Schema.Literal("text_delta"), text: Schema.String }),
      Schema.Struct({ type: Schema.Literal("input_json_delta"), partial_json: Schema.String })
    )
  }),
  Schema.Struct({ type: Schema.Literal("content_block_stop"), index: Schema.Int }),
  Schema.Struct({
    type: Schema.Literal("message_delta"),
    delta: Schema.Struct({ stop_reason: StopReason, stop_sequence: Schema.NullOr(Schema.String) }),
    /** The totals: output tokens, and the input tokens, known only at the end for most providers. */
    usage: MessageUsage
  }),
  Schema.Struct({ type: Schema.Literal("message_stop") }),
  /** Sent while the model is silent, so that proxies keep the connection. */
  Schema.Struct({ type: Schema.Literal("ping") })
)
export type MessageStreamEvent = typeof MessageStreamEvent.Type

/** Anthropic's error body, for every failure (and a stream's `error` event). */
export const MessagesErrorBody = Schema.Struct({
  type: Schema.Literal("error"),
  error: Schema.Struct({
    type: Schema.String.annotations({
      description: "invalid_request_error, authentication_error, permission_error, not_found_error, " +
        "request_too_large, rate_limit_error, api_error or overloaded_error"
    }),
    message: Schema.String
  })
})
export type MessagesErrorBody = typeof MessagesErrorBody.Type

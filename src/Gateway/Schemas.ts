/**
 * OpenAI's chat-completions and embeddings wire format, as far as the gateway
 * speaks it: the requests it accepts, the objects and stream chunks it answers
 * with, and the error body. Field names are OpenAI's (snake_case), since official
 * clients read them as they are.
 */
import { Schema } from "effect"
import { ApiKeyId, LlmModelId, UserId } from "../Domain/Ids.js"
import { Username } from "../Domain/User.js"

/**
 * Where tokens were spent: through the OpenAI-compatible gateway, in a chat, by the knowledge graph
 * (its entities embedded for semantic search, and the searches), or by the server's background work
 * for a user: a conversation's title (`title`), a file's analysis (`analysis`), a knowledge-graph
 * extraction (`extraction`), the embeddings of files' text for document retrieval (`files`).
 */
export const UsageSource = Schema.Literal("gateway", "chat", "graph", "title", "analysis", "extraction", "files")
  .annotations({
    description: "gateway: the OpenAI-compatible API; chat: conversations' answers; graph: the knowledge graph's " +
      "embeddings and semantic searches; title: conversations' titles; analysis: file analyses; extraction: " +
      "knowledge-graph extractions; files: embeddings of files' text for document retrieval"
  })
export type UsageSource = typeof UsageSource.Type

// --- request

const TextPart = Schema.Struct({
  type: Schema.Literal("text").annotations({ message: () => "Only text content parts are supported" }),
  text: Schema.String
})

/** A message's content: a string, or text parts. */
const Content = Schema.Union(Schema.String, Schema.Array(TextPart)).annotations({
  message: () => ({
    message: "Expected a string or an array of text parts",
    override: true
  })
})
export type Content = typeof Content.Type

/** An image a user message shows, inline: a `data:` URL of a PNG, JPEG, GIF or WebP image. */
const dataUrl = /^data:(image\/(?:png|jpeg|gif|webp));base64,([A-Za-z0-9+/=]+)$/

const ImagePart = Schema.Struct({
  type: Schema.Literal("image_url"),
  image_url: Schema.Struct({
    url: Schema.String.pipe(Schema.pattern(dataUrl, {
      message: () => "Images are accepted as data: URLs (base64) of PNG, JPEG, GIF or WebP images"
    })),
    detail: Schema.optional(Schema.String)
  })
})

/** A user message's content: a string, or text and image parts (audio is not supported). */
const UserContent = Schema.Union(Schema.String, Schema.Array(Schema.Union(TextPart, ImagePart))).annotations({
  message: () => ({
    message: "Expected a string or an array of text and image_url parts (audio is not supported)",
    override: true
  })
})
export type UserContent = typeof UserContent.Type

/** The type and the base64 bytes of an image part's `data:` URL. */
export const imageOfUrl = (url: string): { readonly mediaType: string; readonly data: string } => {
  const [, mediaType = "", data = ""] = dataUrl.exec(url) ?? []
  return { mediaType, data }
}

const RequestToolCall = Schema.Struct({
  id: Schema.String,
  type: Schema.Literal("function"),
  function: Schema.Struct({ name: Schema.String, arguments: Schema.String })
})

const SystemMessage = Schema.Struct({
  role: Schema.Literal("system"),
  content: Content
})

/** What newer OpenAI models call the system message. */
const DeveloperMessage = Schema.Struct({
  role: Schema.Literal("developer"),
  content: Content
})

const UserMessage = Schema.Struct({
  role: Schema.Literal("user"),
  content: UserContent
})

const AssistantMessage = Schema.Struct({
  role: Schema.Literal("assistant"),
  content: Schema.optional(Schema.NullOr(Content)),
  tool_calls: Schema.optional(Schema.NullOr(Schema.Array(RequestToolCall)))
})

const ToolMessage = Schema.Struct({
  role: Schema.Literal("tool"),
  content: Content,
  tool_call_id: Schema.String
})

export const RequestMessage = Schema.Union(SystemMessage, DeveloperMessage, UserMessage, AssistantMessage, ToolMessage)
export type RequestMessage = typeof RequestMessage.Type

const FunctionName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9_-]{1,64}$/, {
    message: () => "A function name is 1 to 64 letters, digits, underscores or dashes"
  })
)

const RequestTool = Schema.Struct({
  type: Schema.Literal("function"),
  function: Schema.Struct({
    name: FunctionName,
    description: Schema.optional(Schema.String),
    parameters: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
  })
})

const ToolChoice = Schema.Union(
  Schema.Literal("none", "auto", "required"),
  Schema.Struct({ type: Schema.Literal("function"), function: Schema.Struct({ name: Schema.String }) })
)
export type ToolChoice = typeof ToolChoice.Type

const optionalNullable = <S extends Schema.Schema.Any>(schema: S) => Schema.optional(Schema.NullOr(schema))

const PositiveInt = Schema.Int.pipe(Schema.positive())
const Penalty = Schema.Number.pipe(Schema.between(-2, 2))

/**
 * `POST /v1/chat/completions`. Fields not listed here are ignored; those under
 * "passed through" mean the same to every OpenAI-style API and reach the
 * provider only when it speaks OpenAI's API.
 */
export const ChatCompletionRequest = Schema.Struct({
  model: Schema.String,
  messages: Schema.Array(RequestMessage).pipe(
    Schema.minItems(1, { message: () => "At least one message is required" })
  ),
  temperature: optionalNullable(Schema.Number.pipe(Schema.between(0, 2))),
  top_p: optionalNullable(Schema.Number.pipe(Schema.between(0, 1))),
  max_tokens: optionalNullable(PositiveInt),
  max_completion_tokens: optionalNullable(PositiveInt),
  stop: optionalNullable(Schema.Union(Schema.String, Schema.Array(Schema.String).pipe(Schema.maxItems(4)))),
  tools: optionalNullable(Schema.Array(RequestTool)),
  tool_choice: optionalNullable(ToolChoice),
  stream: optionalNullable(Schema.Boolean),
  stream_options: optionalNullable(Schema.Struct({ include_usage: optionalNullable(Schema.Boolean) })),
  n: optionalNullable(Schema.Literal(1).annotations({ message: () => "Only one choice (n = 1) is supported" })),
  // passed through
  seed: optionalNullable(Schema.Int),
  presence_penalty: optionalNullable(Penalty),
  frequency_penalty: optionalNullable(Penalty),
  response_format: optionalNullable(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  parallel_tool_calls: optionalNullable(Schema.Boolean),
  logit_bias: optionalNullable(Schema.Record({ key: Schema.String, value: Schema.Number })),
  reasoning_effort: optionalNullable(Schema.String),
  user: optionalNullable(Schema.String)
})
export type ChatCompletionRequest = typeof ChatCompletionRequest.Type

/** The request fields handed to an OpenAI-style provider as they are. */
export const passedThrough = [
  "seed",
  "presence_penalty",
  "frequency_penalty",
  "response_format",
  "parallel_tool_calls",
  "logit_bias",
  "reasoning_effort",
  "user"
] as const satisfies ReadonlyArray<keyof ChatCompletionRequest>

// --- responses

export const GatewayModel = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("model"),
  /** Unix seconds. */
  created: Schema.Int,
  owned_by: Schema.String
})
export type GatewayModel = typeof GatewayModel.Type

export const ModelList = Schema.Struct({
  object: Schema.Literal("list"),
  data: Schema.Array(GatewayModel)
})
export type ModelList = typeof ModelList.Type

export const Usage = Schema.Struct({
  prompt_tokens: Schema.Int,
  completion_tokens: Schema.Int,
  total_tokens: Schema.Int
})
export type Usage = typeof Usage.Type

export const FinishReason = Schema.Literal("stop", "length", "tool_calls", "content_filter")

const ToolCall = Schema.Struct({
  id: Schema.String,
  type: Schema.Literal("function"),
  function: Schema.Struct({ name: Schema.String, arguments: Schema.String })
})

export const ChatCompletion = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion"),
  created: Schema.Int,
  model: Schema.String,
  choices: Schema.Array(Schema.Struct({
    index: Schema.Int,
    message: Schema.Struct({
      role: Schema.Literal("assistant"),
      content: Schema.NullOr(Schema.String),
      refusal: Schema.Null,
      tool_calls: Schema.optional(Schema.Array(ToolCall))
    }),
    finish_reason: FinishReason,
    logprobs: Schema.Null
  })),
  usage: Schema.optional(Usage)
})
export type ChatCompletion = typeof ChatCompletion.Type

const ChunkToolCall = Schema.Struct({
  index: Schema.Int,
  id: Schema.optional(Schema.String),
  type: Schema.optional(Schema.Literal("function")),
  function: Schema.Struct({ name: Schema.optional(Schema.String), arguments: Schema.String })
})

export const ChunkChoice = Schema.Struct({
  index: Schema.Int,
  delta: Schema.Struct({
    role: Schema.optional(Schema.Literal("assistant")),
    content: Schema.optional(Schema.String),
    tool_calls: Schema.optional(Schema.Array(ChunkToolCall))
  }),
  finish_reason: Schema.NullOr(FinishReason),
  logprobs: Schema.Null
})
export type ChunkChoice = typeof ChunkChoice.Type

export const ChatCompletionChunk = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion.chunk"),
  created: Schema.Int,
  model: Schema.String,
  /** Empty in the last chunk, the one that carries `usage`. */
  choices: Schema.Array(ChunkChoice),
  /** Present when the client asked for usage: null in every chunk but the last. */
  usage: Schema.optional(Schema.NullOr(Usage))
})
export type ChatCompletionChunk = typeof ChatCompletionChunk.Type

// --- embeddings

/** At most this many inputs in one embeddings request, as OpenAI allows. */
export const maxEmbeddingInputs = 2048

const TokenId = Schema.Int.pipe(Schema.nonNegative())

/** A text, texts, one text's token ids, or several texts' token ids (emptiness is checked by the gateway). */
const EmbeddingInput = Schema.Union(
  Schema.String,
  Schema.Array(Schema.String),
  Schema.Array(TokenId),
  Schema.Array(Schema.Array(TokenId))
).annotations({
  message: () => ({
    message: "Expected a string, an array of strings, an array of token ids (integers) or an array of such arrays",
    override: true
  })
})
export type EmbeddingInput = typeof EmbeddingInput.Type

/** `POST /v1/embeddings`. Fields not listed here are ignored. */
export const EmbeddingRequest = Schema.Struct({
  model: Schema.String,
  input: EmbeddingInput,
  /** `base64`: each vector as its float32 values' little-endian bytes, what OpenAI's clients ask for. */
  encoding_format: optionalNullable(Schema.Literal("float", "base64")),
  dimensions: optionalNullable(PositiveInt),
  // Accepted as OpenAI accepts it, not used.
  user: optionalNullable(Schema.String)
})
export type EmbeddingRequest = typeof EmbeddingRequest.Type

export const Embedding = Schema.Struct({
  object: Schema.Literal("embedding"),
  index: Schema.Int,
  /** The vector's numbers, or (`encoding_format: "base64"`) their float32 little-endian bytes in base64. */
  embedding: Schema.Union(Schema.Array(Schema.Number), Schema.String)
})

export const EmbeddingList = Schema.Struct({
  object: Schema.Literal("list"),
  data: Schema.Array(Embedding),
  /** As the client named it. */
  model: Schema.String,
  usage: Schema.Struct({ prompt_tokens: Schema.Int, total_tokens: Schema.Int })
})
export type EmbeddingList = typeof EmbeddingList.Type

/** OpenAI's error body: the official clients read `error.message`, `type`, `param` and `code`. */
export const ErrorBody = Schema.Struct({
  error: Schema.Struct({
    message: Schema.String,
    type: Schema.String,
    param: Schema.NullOr(Schema.String),
    code: Schema.NullOr(Schema.String)
  })
})
export type ErrorBody = typeof ErrorBody.Type

// --- the gateway's own failures (besides NotFound, Forbidden and the provider failures)

/** The request is not one the gateway can serve; `param` names the field, as OpenAI's 400s do. */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  message: Schema.String,
  param: Schema.NullOr(Schema.String)
}) {}

/** No model the caller may use goes by this name. */
export class UnknownModel extends Schema.TaggedError<UnknownModel>()("UnknownModel", {
  model: Schema.String
}) {}

// --- usage per key (part of the REST API)

export class UsageTotals extends Schema.Class<UsageTotals>("UsageTotals")({
  source: UsageSource,
  modelId: Schema.NullOr(LlmModelId).annotations({ description: "Null once the model was deleted" }),
  modelName: Schema.NullOr(Schema.String),
  requests: Schema.Int,
  promptTokens: Schema.Int,
  completionTokens: Schema.Int,
  totalTokens: Schema.Int
}) {}

export class ApiKeyUsage extends Schema.Class<ApiKeyUsage>("ApiKeyUsage")(
  {
    apiKeyId: ApiKeyId,
    requests: Schema.Int,
    promptTokens: Schema.Int,
    completionTokens: Schema.Int,
    totalTokens: Schema.Int,
    byModel: Schema.Array(UsageTotals).annotations({ description: "Per source and model" })
  },
  { description: "Tokens the providers reported for answers requested with this key" }
) {}

// --- usage reports per user and over every user (part of the REST API)

/** A UTC calendar day. */
export const UsageDay = Schema.String.pipe(Schema.pattern(/^\d{4}-\d{2}-\d{2}$/)).annotations({
  description: "A calendar day in UTC, YYYY-MM-DD"
})

const counts = {
  requests: Schema.Int.annotations({ description: "Answers whose usage the provider reported" }),
  promptTokens: Schema.Int,
  completionTokens: Schema.Int,
  totalTokens: Schema.Int
}

export const UsageCounts = Schema.Struct(counts).annotations({ identifier: "UsageCounts" })
export type UsageCounts = typeof UsageCounts.Type

/**
 * One group of a report: `key` names it whatever the grouping (what a client keys a table row or a
 * chart's series by), beside the grouping's own typed fields.
 */
export const ModelUsage = Schema.Struct({
  key: Schema.String.annotations({ description: "The model's id; for a deleted model, the name it had" }),
  modelId: Schema.NullOr(LlmModelId).annotations({ description: "Null once the model was deleted" }),
  modelName: Schema.NullOr(Schema.String).annotations({ description: "The provider's name for the model" }),
  ...counts
}).annotations({ identifier: "ModelUsage" })

export const DayUsage = Schema.Struct({
  key: Schema.String.annotations({ description: "The day" }),
  day: UsageDay,
  ...counts
}).annotations({ identifier: "DayUsage" })

export const SourceUsage = Schema.Struct({
  key: Schema.String.annotations({ description: "The source" }),
  source: UsageSource,
  ...counts
}).annotations({ identifier: "SourceUsage" })

export const UserUsage = Schema.Struct({
  key: Schema.String.annotations({ description: "The user's id" }),
  userId: UserId,
  username: Username,
  ...counts
}).annotations({ identifier: "UserUsage" })

/** A report grouped by `groupBy`: the range asked for, the totals over it, and its groups. */
const usageReport = <G extends string, Group extends Schema.Schema.Any>(groupBy: G, group: Group, order: string) =>
  Schema.Struct({
    from: Schema.NullOr(Schema.DateTimeUtc).annotations({ description: "The range's start (inclusive); null: none" }),
    to: Schema.NullOr(Schema.DateTimeUtc).annotations({ description: "The range's end (exclusive); null: none" }),
    groupBy: Schema.Literal(groupBy),
    totals: UsageCounts,
    groups: Schema.Array(group).annotations({ description: order })
  })

const byTokens = "Most tokens first"

export const UsageByModel = usageReport("model", ModelUsage, `${byTokens}, then by model name`).annotations({
  identifier: "UsageByModel"
})
export const UsageByDay = usageReport("day", DayUsage, "Oldest day first; days without usage are left out")
  .annotations({ identifier: "UsageByDay" })
export const UsageBySource = usageReport("source", SourceUsage, `${byTokens}, then by source`).annotations({
  identifier: "UsageBySource"
})
export const UsageByUser = usageReport("user", UserUsage, `${byTokens}, then by username`).annotations({
  identifier: "UsageByUser"
})
export type UsageByModel = typeof UsageByModel.Type
export type UsageByDay = typeof UsageByDay.Type
export type UsageBySource = typeof UsageBySource.Type
export type UsageByUser = typeof UsageByUser.Type

/** Where the caller stands in the current token budget period (`TOKEN_BUDGET_PER_USER`, their role's budget). */
export class TokenBudget extends Schema.Class<TokenBudget>("TokenBudget")({
  tokens: Schema.NullOr(Schema.Int).annotations({
    description: "Tokens you may spend per period: your role's budget, else the server's; null: no budget holds you"
  }),
  spent: Schema.Int.annotations({
    description: "Tokens spent this period: every model call made for you (chat, gateway, titles, analyses, " +
      "extractions, the knowledge graph's embeddings and searches)"
  }),
  remaining: Schema.NullOr(Schema.Int).annotations({ description: "Left this period (0 once spent); null: no budget" }),
  exempt: Schema.Boolean.annotations({ description: "Whether you hold `ratelimit:exempt` (no budget, no limits)" }),
  key: Schema.NullOr(Schema.Struct({
    tokens: Schema.Int,
    spent: Schema.Int,
    remaining: Schema.Int
  })).annotations({ description: "Asked with an API key that has a token budget of its own: that budget" }),
  period: Schema.Literal("day", "week", "month"),
  periodStart: Schema.DateTimeUtc,
  renewsAt: Schema.DateTimeUtc
}) {}

/** A user's own usage, as grouped. */
export const MyUsage = Schema.Union(UsageByModel, UsageByDay, UsageBySource).annotations({
  description: "Tokens the providers reported for every model call made for you (chat, gateway, titles, analyses, " +
    "extractions, the knowledge graph's embeddings and searches), every key and session"
})
export type MyUsage = typeof MyUsage.Type

/** Every user's usage (or one user's), as grouped. */
export const UsageReport = Schema.Union(UsageByModel, UsageByDay, UsageBySource, UsageByUser).annotations({
  description: "Tokens the providers reported for the model calls made for every user (or for one), whatever the source"
})
export type UsageReport = typeof UsageReport.Type

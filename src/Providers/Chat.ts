/**
 * What a chat with a model looks like to the server, whatever wire protocol
 * the provider speaks: a request (messages, generation parameters, tools) and
 * the answer as a stream of typed chunks. Each adapter (`OpenAi.ts`,
 * `Anthropic.ts`, `Ollama.ts`, `Development.ts`) translates both ways.
 */
import { Either, Schema } from "effect"

export const ChatRole = Schema.Literal("system", "user", "assistant", "tool")
export type ChatRole = typeof ChatRole.Type

/** A tool call the model asked for; `arguments` is the JSON text the model wrote. */
export interface ChatToolCall {
  readonly id: string
  readonly name: string
  readonly arguments: string
}

/** An image a message shows the model: its type and its bytes in base64. */
export interface ChatImage {
  readonly mediaType: string
  readonly data: string
}

export interface ChatMessage {
  readonly role: ChatRole
  readonly content: string
  /** On a user message: images it shows (for models that see). */
  readonly images?: ReadonlyArray<ChatImage> | undefined
  /** On an assistant message: the tools it called. */
  readonly toolCalls?: ReadonlyArray<ChatToolCall> | undefined
  /** On a tool message: the call it answers. */
  readonly toolCallId?: string | undefined
}

/** A function the model may call, described by a JSON Schema of its parameters (OpenAI's shape). */
export interface ChatTool {
  readonly name: string
  readonly description?: string | undefined
  readonly parameters: Record<string, unknown>
}

/** `auto`, `none`, `required`, or one named tool. */
export type ChatToolChoice = "auto" | "none" | "required" | { readonly name: string }

/** Why a tool choice cannot be served: it needs tools and none are offered, or it names one not offered. */
export type ToolChoiceProblem = "needs-tools" | "unknown-tool"

/**
 * A request's tools and tool choice as providers are sent them (a function without parameters
 * takes none, as OpenAI reads it), or why the choice cannot be served.
 */
export const offerTools = (
  tools: ReadonlyArray<{
    readonly name: string
    readonly description?: string | undefined
    readonly parameters?: Record<string, unknown> | undefined
  }>,
  choice: ChatToolChoice | undefined
): Either.Either<Pick<ChatRequest, "tools" | "toolChoice">, ToolChoiceProblem> => {
  if ((choice === "required" || typeof choice === "object") && tools.length === 0) return Either.left("needs-tools")
  if (typeof choice === "object" && !tools.some((tool) => tool.name === choice.name)) {
    return Either.left("unknown-tool")
  }
  return Either.right({
    ...(tools.length > 0
      ? {
        tools: tools.map((tool) => ({
          name: tool.name,
          description: tool.description,
          parameters: tool.parameters ?? { type: "object", properties: {} }
        }))
      }
      : {}),
    ...(choice !== undefined ? { toolChoice: choice } : {})
  })
}

export interface ChatRequest {
  /** The model as the provider names it. */
  readonly model: string
  readonly messages: ReadonlyArray<ChatMessage>
  readonly temperature?: number | undefined
  readonly topP?: number | undefined
  readonly maxTokens?: number | undefined
  readonly stop?: ReadonlyArray<string> | undefined
  readonly tools?: ReadonlyArray<ChatTool> | undefined
  readonly toolChoice?: ChatToolChoice | undefined
  /** Provider-specific parameters passed through as they are (a preset's `extraParams`). */
  readonly extra?: Record<string, unknown> | undefined
}

export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter"

/**
 * One piece of a streamed answer:
 * - `text`: more of the answer's text;
 * - `tool-call`: part of a tool call, identified by its `index` in the answer;
 *   `id` and `name` come with its first part, `arguments` grows part by part;
 * - `usage`: token counts (usually once, near the end);
 * - `finish`: why the model stopped (last chunk of a complete answer), and the stop sequence that
 *   ended it when the provider says which (Anthropic does; OpenAI's and Ollama's APIs do not).
 */
export type ChatChunk =
  | { readonly _tag: "text"; readonly text: string }
  | {
    readonly _tag: "tool-call"
    readonly index: number
    readonly id?: string | undefined
    readonly name?: string | undefined
    readonly arguments: string
  }
  | { readonly _tag: "usage"; readonly promptTokens: number; readonly completionTokens: number }
  | { readonly _tag: "finish"; readonly reason: FinishReason; readonly stopSequence?: string | undefined }

/**
 * Chat: send a message and get the model's answer, streamed as Server-Sent
 * Events (when the client accepts `text/event-stream`) or as one JSON
 * document; regenerate, continue, cancel, and resume a stream after a
 * disconnect. The events (`ChatEvent`) are the one description of a streamed
 * answer, whatever carries them.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { MessageContent } from "../Conversations/Api.js"
import { MessageView, ToolCall } from "../Domain/Conversation.js"
import { Forbidden, NotFound, RateLimited } from "../Domain/Errors.js"
import { JsonObject, NonNegativeInt } from "../Domain/Fields.js"
import { ConversationId, FileId, LlmModelId, MessageId, ModelConfigId, ThreadId, UserId } from "../Domain/Ids.js"
import { request } from "../Domain/Request.js"
import { maxAttachments } from "../Files/Api.js"
import { ProviderError, ProviderTimeout, ProviderUnavailable, ProviderUnreachable } from "../Models/Errors.js"

// --- the events of a streamed answer

const EventId = NonNegativeInt.annotations({
  description: "The event's position in its answer's stream (the SSE `id`): resume after it with `Last-Event-ID`"
})

export const ChatStarted = Schema.TaggedStruct("start", {
  id: EventId,
  conversationId: ConversationId,
  question: Schema.NullOr(MessageView).annotations({ description: "The user's message, now stored" }),
  answer: MessageView.annotations({ description: "The answer being written (status `streaming`)" })
})

export const ChatDelta = Schema.TaggedStruct("delta", { id: EventId, text: Schema.String })

export const ChatToolCallDelta = Schema.TaggedStruct("tool_call", {
  id: EventId,
  index: NonNegativeInt.annotations({ description: "Which tool call of the answer this part belongs to" }),
  callId: Schema.optional(Schema.String),
  name: Schema.optional(Schema.String),
  arguments: Schema.String.annotations({ description: "More of the call's JSON arguments" })
})

export const ChatUsage = Schema.TaggedStruct("usage", {
  id: EventId,
  promptTokens: NonNegativeInt,
  completionTokens: NonNegativeInt
})

export const ChatSnapshot = Schema.TaggedStruct("snapshot", {
  id: EventId,
  content: Schema.String.annotations({ description: "The whole text so far: replaces what the client has" })
})

export const ChatFailure = Schema.TaggedStruct("error", {
  id: EventId,
  error: Schema.Struct({ _tag: Schema.String, message: Schema.String })
})

export const ChatDone = Schema.TaggedStruct("done", {
  id: EventId,
  message: MessageView.annotations({
    description: "The answer as stored: `complete`, `cancelled`, `error` or `incomplete`"
  })
})

export const ChatEvent = Schema.Union(
  ChatStarted,
  ChatDelta,
  ChatToolCallDelta,
  ChatUsage,
  ChatSnapshot,
  ChatFailure,
  ChatDone
)
export type ChatEvent = typeof ChatEvent.Type

// --- requests

const ModelChoice = {
  modelId: Schema.optional(LlmModelId).annotations({
    description: "The model for this answer; by default the conversation's, then its preset's, then the first usable"
  }),
  modelConfigId: Schema.optional(ModelConfigId).annotations({
    description: "The preset (system prompt, parameters) for this answer; by default the conversation's"
  })
}

const ToolName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9_-]{1,64}$/, {
    message: () => "A tool name is 1 to 64 letters, digits, underscores or dashes"
  })
)

export const ToolDefinition = Schema.Struct({
  name: ToolName,
  description: Schema.optional(Schema.String.pipe(Schema.maxLength(4096))),
  parameters: Schema.optional(JsonObject).annotations({
    description: "A JSON Schema of the tool's arguments; without one, it takes none"
  })
}).annotations({ identifier: "ToolDefinition" })
export type ToolDefinition = typeof ToolDefinition.Type

export const ToolChoice = Schema.Union(
  Schema.Literal("auto", "none", "required"),
  Schema.Struct({ name: ToolName })
).annotations({ identifier: "ToolChoice" })
export type ToolChoice = typeof ToolChoice.Type

/**
 * Tools the model may call in this answer. Its calls end the answer (`toolCalls`); run them, append
 * each result as a `tool` message (`toolCallId`), then `continue` with the same tools.
 */
const ToolUse = {
  tools: Schema.optional(Schema.Array(ToolDefinition).pipe(Schema.maxItems(128))).annotations({
    description: "Functions the model may call in this answer (it calls none when omitted)"
  }),
  toolChoice: Schema.optional(ToolChoice).annotations({
    description: "`auto` (the default with tools), `none`, `required`, or `{ name }`: that tool"
  })
}

/** Files the question carries: their text is sent to the model with it, at this turn and the next ones. */
const Attached = Schema.optional(Schema.Array(FileId).pipe(Schema.maxItems(maxAttachments))).annotations({
  description: `Your text files (at most ${maxAttachments}) to send with the question (needs \`files:read\`)`
})

export class ChatPayload extends Schema.Class<ChatPayload>("ChatPayload")({
  content: MessageContent,
  parentId: Schema.optional(MessageId).annotations({
    description: "The message to answer; the current leaf when omitted (the active branch goes on)"
  }),
  metadata: Schema.optional(JsonObject),
  fileIds: Attached,
  ...ModelChoice,
  ...ToolUse
}) {}

export class NewChatPayload extends Schema.Class<NewChatPayload>("NewChatPayload")({
  content: MessageContent,
  title: Schema.optional(Schema.String.pipe(Schema.maxLength(500))).annotations({
    description: "Without one, a title is generated in the background"
  }),
  metadata: Schema.optional(JsonObject),
  fileIds: Attached,
  ...ModelChoice,
  ...ToolUse
}) {}

export class ThreadChatPayload extends Schema.Class<ThreadChatPayload>("ThreadChatPayload")({
  content: MessageContent,
  metadata: Schema.optional(JsonObject),
  fileIds: Attached,
  ...ModelChoice,
  ...ToolUse
}) {}

export class RegeneratePayload extends Schema.Class<RegeneratePayload>("RegeneratePayload")({
  ...ModelChoice,
  ...ToolUse
}) {}

export class ContinuePayload extends Schema.Class<ContinuePayload>("ContinuePayload")({
  parentId: Schema.optional(MessageId).annotations({
    description: "The user or tool message to answer; the current leaf when omitted (after an edit, the edited " +
      "message; after tool results, the last of them)"
  }),
  ...ModelChoice,
  ...ToolUse
}) {}

/** The answer, once finished, for a client that does not read events. */
export class ChatResult extends Schema.Class<ChatResult>("ChatResult")({
  conversationId: ConversationId,
  question: Schema.NullOr(MessageView),
  answer: MessageView
}) {}

export const SimpleChatPayload = request(Schema.Struct({
  message: MessageContent,
  conversation_id: Schema.optional(ConversationId)
}))

export class SimpleChatResponse extends Schema.Class<SimpleChatResponse>("SimpleChatResponse")({
  conversation_id: ConversationId,
  response: Schema.String,
  tool_calls: Schema.Array(ToolCall)
}) {}

const EventStream = HttpApiSchema.Text({ contentType: "text/event-stream" }).annotations({
  description: "Server-Sent Events: `start`, `delta`, `tool_call`, `usage`, `error`, then `done` (see ChatEvent)"
})

const ConversationPath = request(Schema.Struct({ id: ConversationId }))
const MessagePath = request(Schema.Struct({ id: ConversationId, messageId: MessageId }))
const ThreadPath = request(Schema.Struct({ id: ConversationId, threadId: ThreadId }))
const ResumeHeaders = request(Schema.Struct({
  "last-event-id": Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.nonNegative()))
}))

const streamedOrJson = "Streams Server-Sent Events when the request accepts `text/event-stream`; " +
  "otherwise waits for the end and answers JSON. The user's message is stored first; the answer is written " +
  "as it grows and finishes even if the client goes away."

export class ChatApi extends HttpApiGroup.make("chat")
  .add(
    HttpApiEndpoint.post("chat", "/api/v1/conversations/:id/chat")
      .setPath(ConversationPath)
      .setPayload(request(ChatPayload))
      .addSuccess(ChatResult)
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Send a message and get the answer")
      .annotate(OpenApi.Description, streamedOrJson)
  )
  .add(
    HttpApiEndpoint.post("newChat", "/api/v1/chat")
      .setPayload(request(NewChatPayload))
      .addSuccess(ChatResult)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Start a conversation with a message and get the answer")
      .annotate(OpenApi.Description, streamedOrJson)
  )
  .add(
    HttpApiEndpoint.post("threadChat", "/api/v1/conversations/:id/threads/:threadId/chat")
      .setPath(ThreadPath)
      .setPayload(request(ThreadChatPayload))
      .addSuccess(ChatResult)
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Ask in a side thread and get the answer")
      .annotate(
        OpenApi.Description,
        "The question and the answer are the thread's messages. The model is sent the conversation's branch up " +
          "to the thread's message, then the thread (oldest turns dropped to fit its context window). " +
          streamedOrJson
      )
  )
  .add(
    HttpApiEndpoint.post("regenerate", "/api/v1/conversations/:id/messages/:messageId/regenerate")
      .setPath(MessagePath)
      .setPayload(request(RegeneratePayload))
      .addSuccess(ChatResult)
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Answer the same question again, as a new sibling branch of this answer")
      .annotate(OpenApi.Description, streamedOrJson)
  )
  .add(
    HttpApiEndpoint.post("continueChat", "/api/v1/conversations/:id/continue")
      .setPath(ConversationPath)
      .setPayload(request(ContinuePayload))
      .addSuccess(ChatResult)
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Answer the user message at the end of the branch (after an edit)")
      .annotate(OpenApi.Description, streamedOrJson)
  )
  .add(
    HttpApiEndpoint.post("cancelAnswer", "/api/v1/conversations/:id/messages/:messageId/cancel")
      .setPath(MessagePath)
      .addSuccess(MessageView)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Stop an answer being written; it keeps its text and becomes `cancelled`")
  )
  .add(
    HttpApiEndpoint.get("resumeAnswer", "/api/v1/conversations/:id/messages/:messageId/events")
      .setPath(MessagePath)
      .setHeaders(ResumeHeaders)
      .addSuccess(EventStream)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "An answer's event stream, from after `Last-Event-ID`")
      .annotate(
        OpenApi.Description,
        "While the answer is written here, the events after `Last-Event-ID` and then the live ones; " +
          "when it is written by another instance, `snapshot`s of its text; once it is over, `done`."
      )
  )
  .add(
    HttpApiEndpoint.post("simpleChat", "/api/:userId/chat")
      .setPath(request(Schema.Struct({ userId: UserId })))
      .setPayload(SimpleChatPayload)
      .addSuccess(SimpleChatResponse)
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "Send a message as the user in the path; JSON in, JSON out")
      .annotate(
        OpenApi.Description,
        "Continues `conversation_id`, or starts a conversation without it. 403 when the path's user is not you; 422 when it is not a user id."
      )
  )
  .addError(Forbidden)
  .addError(ProviderUnreachable)
  .addError(ProviderTimeout)
  .addError(ProviderError)
  .addError(ProviderUnavailable)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Chat with a model: streamed answers that are never lost")
{}

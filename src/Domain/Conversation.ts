/** Conversations, their messages (a tree through `parentId`) and side threads. */
import { Model } from "@effect/sql"
import { Schema } from "effect"
import { JsonObject, JsonObjectColumn, NonNegativeInt, OptionalDateTime } from "./Fields.js"
import { ConversationId, IdInsert, LlmModelId, MessageId, ModelConfigId, ThreadId, UserId } from "./Ids.js"

export class Conversation extends Model.Class<Conversation>("Conversation")({
  id: IdInsert(ConversationId),
  userId: UserId,
  title: Schema.String.pipe(Schema.maxLength(500)),
  modelId: Schema.NullOr(LlmModelId),
  modelConfigId: Schema.NullOr(ModelConfigId),
  currentLeafId: Schema.NullOr(MessageId),
  pinned: Model.BooleanFromNumber,
  archived: Model.BooleanFromNumber,
  deletedAt: OptionalDateTime,
  messageCount: NonNegativeInt,
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}

export const MessageRole = Schema.Literal("system", "user", "assistant", "tool")
export type MessageRole = typeof MessageRole.Type

/**
 * `streaming` while an answer is being written, `complete` when finished,
 * `incomplete` when a crash cut it short, `cancelled` on explicit cancel,
 * `error` when the provider failed (the partial text is kept in every case).
 */
export const MessageStatus = Schema.Literal("streaming", "complete", "incomplete", "cancelled", "error")
export type MessageStatus = typeof MessageStatus.Type

export class ToolCall extends Schema.Class<ToolCall>("ToolCall")({
  id: Schema.String,
  name: Schema.String,
  arguments: Schema.String
}) {}

export class Message extends Model.Class<Message>("Message")({
  id: IdInsert(MessageId),
  conversationId: ConversationId,
  parentId: Schema.NullOr(MessageId),
  threadId: Schema.NullOr(ThreadId),
  role: MessageRole,
  content: Schema.String,
  status: MessageStatus,
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  promptTokens: Schema.NullOr(NonNegativeInt),
  completionTokens: Schema.NullOr(NonNegativeInt),
  toolCalls: Model.JsonFromString(Schema.Array(ToolCall)),
  metadata: JsonObjectColumn,
  editedFromId: Schema.NullOr(MessageId),
  deletedAt: OptionalDateTime,
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}

/** A named side discussion anchored on one message, with its own messages. */
export class Thread extends Model.Class<Thread>("Thread")({
  id: IdInsert(ThreadId),
  conversationId: ConversationId,
  anchorMessageId: MessageId,
  userId: UserId,
  title: Schema.String.pipe(Schema.maxLength(500)),
  createdAt: Model.DateTimeInsert,
  updatedAt: Model.DateTimeUpdate
}) {}

// --- as the API shows them

/** The message a conversation currently ends with, as the list shows it. */
export class LastMessage extends Schema.Class<LastMessage>("LastMessage")({
  id: MessageId,
  role: MessageRole,
  status: MessageStatus,
  preview: Schema.String.annotations({ description: "The first 200 characters of its content" }),
  createdAt: Schema.DateTimeUtc
}) {}

export class ConversationView extends Schema.Class<ConversationView>("ConversationView")({
  id: ConversationId,
  title: Schema.String,
  modelId: Schema.NullOr(LlmModelId),
  modelConfigId: Schema.NullOr(ModelConfigId),
  currentLeafId: Schema.NullOr(MessageId).annotations({ description: "The end of the active branch" }),
  pinned: Schema.Boolean,
  archived: Schema.Boolean,
  deletedAt: Schema.NullOr(Schema.DateTimeUtc).annotations({ description: "Set while in the trash" }),
  messageCount: NonNegativeInt.annotations({ description: "Live messages of the tree, every branch included" }),
  lastMessage: Schema.NullOr(LastMessage),
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
}) {}

export class MessageView extends Schema.Class<MessageView>("MessageView")({
  id: MessageId,
  conversationId: ConversationId,
  parentId: Schema.NullOr(MessageId),
  threadId: Schema.NullOr(ThreadId),
  role: MessageRole,
  content: Schema.String,
  status: MessageStatus,
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  promptTokens: Schema.NullOr(NonNegativeInt),
  completionTokens: Schema.NullOr(NonNegativeInt),
  toolCalls: Schema.Array(ToolCall),
  metadata: JsonObject,
  editedFromId: Schema.NullOr(MessageId).annotations({ description: "The message this one is an edit of" }),
  siblingIndex: NonNegativeInt.annotations({
    description: "Position among the messages with the same parent, oldest first (0-based): show it as index + 1"
  }),
  siblingCount: Schema.Int.pipe(Schema.positive()).annotations({
    description: "How many messages share this one's parent (alternative branches), this one included"
  }),
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
}) {}

export class ThreadView extends Schema.Class<ThreadView>("ThreadView")({
  id: ThreadId,
  conversationId: ConversationId,
  anchorMessageId: MessageId,
  title: Schema.String,
  messageCount: NonNegativeInt,
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
}) {}

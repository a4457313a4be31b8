/** Conversations, their messages (a tree through `parentId`) and side threads. */
import { Model } from "@effect/sql"
import { Schema } from "effect"
import { JsonObjectColumn, NonNegativeInt, OptionalDateTime } from "./Fields.js"
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

/** The conversation history: conversations, the message tree, threads, search, export and import. */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { JSONSchema, Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import {
  ConversationView,
  MessageRole,
  MessageStatus,
  MessageView,
  ThreadView,
  ToolCall
} from "../Domain/Conversation.js"
import { Forbidden, NotFound } from "../Domain/Errors.js"
import { JsonObject, NonNegativeInt } from "../Domain/Fields.js"
import { ConversationId, LlmModelId, MessageId, ModelConfigId, ThreadId } from "../Domain/Ids.js"
import { Page, PageParams } from "../Domain/Pagination.js"
import { request } from "../Domain/Request.js"

export const maxTitleLength = 500
const Title = Schema.String.pipe(Schema.maxLength(maxTitleLength))
/** Where conversations are imported: the body limit there is `IMPORT_MAX_SIZE`, not `MAX_BODY_SIZE` (see `Http/ErrorModel.ts`). */
export const importPath = "/api/v1/conversations/import"

/** What one message may hold: generous for pasted documents, bounded so one row stays reasonable. */
export const maxContentLength = 200_000
export const MessageContent = Schema.String.pipe(
  Schema.minLength(1, { message: () => "A message needs content" }),
  Schema.maxLength(maxContentLength)
)
const BooleanParam = Schema.Literal("true", "false").pipe(
  Schema.transform(Schema.Boolean, { strict: true, decode: (s) => s === "true", encode: (b) => (b ? "true" : "false") })
)

const ConversationPath = request(Schema.Struct({ id: ConversationId }))
const MessagePath = request(Schema.Struct({ id: ConversationId, messageId: MessageId }))
const ThreadPath = request(Schema.Struct({ id: ConversationId, threadId: ThreadId }))

export class CreateConversationPayload extends Schema.Class<CreateConversationPayload>("CreateConversationPayload")({
  title: Schema.optional(Title),
  modelId: Schema.optional(Schema.NullOr(LlmModelId)),
  modelConfigId: Schema.optional(Schema.NullOr(ModelConfigId))
}) {}

export class UpdateConversationPayload extends Schema.Class<UpdateConversationPayload>("UpdateConversationPayload")({
  title: Schema.optional(Title),
  modelId: Schema.optional(Schema.NullOr(LlmModelId)),
  modelConfigId: Schema.optional(Schema.NullOr(ModelConfigId)),
  pinned: Schema.optional(Schema.Boolean),
  archived: Schema.optional(Schema.Boolean)
}) {}

export const ConversationListQuery = request(Schema.Struct({
  ...PageParams.fields,
  archived: Schema.optional(BooleanParam).annotations({ description: "List the archive instead (default false)" }),
  trashed: Schema.optional(BooleanParam).annotations({
    description: "List the trash instead, most recently deleted first (default false)"
  })
}))

export class AppendMessagePayload extends Schema.Class<AppendMessagePayload>("AppendMessagePayload")({
  content: MessageContent,
  role: Schema.optionalWith(Schema.Literal("user", "assistant", "system", "tool"), {
    default: () => "user" as const
  }),
  parentId: Schema.optional(MessageId).annotations({
    description: "The message to answer; the current leaf when omitted (the active branch goes on)"
  }),
  toolCallId: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(200))).annotations({
    description: "A `tool` message's call: one the answer above it made (directly, or above other results)"
  }),
  metadata: Schema.optional(JsonObject)
}) {}

export class EditMessagePayload extends Schema.Class<EditMessagePayload>("EditMessagePayload")({
  content: MessageContent,
  metadata: Schema.optional(JsonObject)
}) {}

export class SetCurrentLeafPayload extends Schema.Class<SetCurrentLeafPayload>("SetCurrentLeafPayload")({
  messageId: MessageId,
  descend: Schema.optionalWith(Schema.Boolean, { default: () => false }).annotations({
    description: "Follow the newest answers below the message down to a leaf (to show a sibling's own branch)"
  })
}) {}

export const MessageListQuery = request(Schema.Struct({
  view: Schema.optionalWith(Schema.Literal("active", "tree"), { default: () => "active" as const }).annotations({
    description: "`active`: the branch from the root to the current leaf; `tree`: every message, oldest first, paged"
  }),
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 1000))).annotations({
    description: "Tree: the page size (default 100). Active branch: only the `limit` messages nearest the leaf " +
      "(still root first), `nextCursor` leading to the ones above; without it, the whole branch"
  }),
  cursor: Schema.optional(Schema.String.pipe(Schema.maxLength(500)))
}))

export class MessageList extends Schema.Class<MessageList>("MessageList")({
  currentLeafId: Schema.NullOr(MessageId),
  items: Schema.Array(MessageView),
  nextCursor: Schema.NullOr(Schema.String).annotations({
    description: "Pass as `cursor` for the next page (tree: newer messages; active branch with `limit`: the " +
      "messages above, toward the root)"
  })
}) {}

export class CreateThreadPayload extends Schema.Class<CreateThreadPayload>("CreateThreadPayload")({
  messageId: MessageId.annotations({ description: "The message the thread discusses" }),
  title: Schema.optional(Title)
}) {}

export class UpdateThreadPayload extends Schema.Class<UpdateThreadPayload>("UpdateThreadPayload")({
  title: Title
}) {}

export class AppendThreadMessagePayload extends Schema.Class<AppendThreadMessagePayload>("AppendThreadMessagePayload")({
  content: MessageContent,
  role: Schema.optionalWith(Schema.Literal("user", "assistant", "system"), { default: () => "user" as const }),
  metadata: Schema.optional(JsonObject)
}) {}

export const SearchQuery = request(Schema.Struct({
  q: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(500)),
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, 50))),
  cursor: Schema.optional(Schema.String.pipe(Schema.maxLength(100)))
}))

export class SearchHit extends Schema.Class<SearchHit>("SearchHit")({
  kind: Schema.Literal("conversation", "message").annotations({
    description: "A match in a conversation's title, or in a message"
  }),
  conversationId: ConversationId,
  conversationTitle: Schema.String,
  messageId: Schema.NullOr(MessageId),
  threadId: Schema.NullOr(ThreadId),
  role: Schema.NullOr(MessageRole),
  snippet: Schema.String.annotations({
    description: "HTML-escaped text around the match, with the matched words in <mark>…</mark>"
  }),
  score: Schema.Number.annotations({ description: "Relevance (higher is better; title matches rank first)" }),
  createdAt: Schema.DateTimeUtc
}) {}

// --- export and import

const LocalRef = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(100)).annotations({
  description: "An id local to the document: messages refer to each other by it"
})

export class ExportedMessage extends Schema.Class<ExportedMessage>("ExportedMessage")({
  id: LocalRef,
  parentId: Schema.NullOr(LocalRef),
  role: MessageRole,
  content: Schema.String.pipe(Schema.maxLength(maxContentLength)),
  status: MessageStatus,
  modelName: Schema.NullOr(Schema.String.pipe(Schema.maxLength(200))),
  promptTokens: Schema.NullOr(NonNegativeInt),
  completionTokens: Schema.NullOr(NonNegativeInt),
  toolCalls: Schema.Array(ToolCall),
  metadata: JsonObject,
  editedFromId: Schema.NullOr(LocalRef),
  deleted: Schema.Boolean,
  createdAt: Schema.DateTimeUtc
}) {}

export class ExportedThreadMessage extends Schema.Class<ExportedThreadMessage>("ExportedThreadMessage")({
  role: MessageRole,
  content: Schema.String.pipe(Schema.maxLength(maxContentLength)),
  status: MessageStatus,
  modelName: Schema.NullOr(Schema.String.pipe(Schema.maxLength(200))),
  metadata: JsonObject,
  createdAt: Schema.DateTimeUtc
}) {}

export class ExportedThread extends Schema.Class<ExportedThread>("ExportedThread")({
  anchorMessageId: LocalRef,
  title: Title,
  createdAt: Schema.DateTimeUtc,
  messages: Schema.Array(ExportedThreadMessage)
}) {}

/** A whole conversation (every branch, threads, deleted messages marked) as a self-contained document. */
export class ConversationExport extends Schema.Class<ConversationExport>("ConversationExport")({
  format: Schema.Literal("webplus.conversation"),
  version: Schema.Literal(1),
  exportedAt: Schema.DateTimeUtc,
  conversation: Schema.Struct({
    title: Title,
    pinned: Schema.Boolean,
    archived: Schema.Boolean,
    currentLeafId: Schema.NullOr(LocalRef),
    createdAt: Schema.DateTimeUtc
  }),
  messages: Schema.Array(ExportedMessage).pipe(Schema.maxItems(100_000)),
  threads: Schema.Array(ExportedThread).pipe(Schema.maxItems(10_000))
}) {}

// --- the export files of other products (only the fields an import reads; the rest is ignored)

/** How many conversations one file of another product may bring (its messages: as many as one document). */
export const maxImportedConversations = 10_000

/**
 * A list of `item`s, or one `item` alone, taken as a list of one (its errors reported under `0`). Not a
 * union of the two: a failing item would be reported twice, once for each alternative.
 */
const OneOrMany = <A, I>(item: Schema.Schema<A, I>) => {
  const { $schema: _, ...described } = JSONSchema.make(Schema.Union(Schema.Array(item), item))
  return Schema.transform(
    Schema.Union(Schema.Array(Schema.Unknown), Schema.Record({ key: Schema.String, value: Schema.Unknown })),
    Schema.Array(item).pipe(Schema.maxItems(maxImportedConversations)),
    { strict: false, decode: (input) => (Array.isArray(input) ? input : [input]), encode: (items) => items }
  ).annotations({ jsonSchema: described })
}

/** Seconds since 1970 (also read: milliseconds, microseconds and nanoseconds, told apart by their size). */
const Epoch = Schema.Number.pipe(Schema.finite())

export const OpenWebUiMessage = Schema.Struct({
  parentId: Schema.optional(Schema.NullOr(Schema.String)),
  childrenIds: Schema.optional(Schema.NullOr(Schema.Array(Schema.String))),
  role: Schema.String.annotations({ description: "`user`, `assistant` or `system`; others are left out" }),
  content: Schema.optional(Schema.NullOr(Schema.String)),
  timestamp: Schema.optional(Schema.NullOr(Epoch)),
  model: Schema.optional(Schema.NullOr(Schema.String)),
  modelName: Schema.optional(Schema.NullOr(Schema.String)),
  done: Schema.optional(Schema.NullOr(Schema.Boolean)),
  error: Schema.optional(Schema.Unknown),
  usage: Schema.optional(Schema.Unknown)
})
export type OpenWebUiMessage = typeof OpenWebUiMessage.Type

const OpenWebUiChatBody = {
  title: Schema.optional(Schema.NullOr(Schema.String)),
  history: Schema.optional(Schema.Struct({
    messages: Schema.Record({ key: Schema.String, value: OpenWebUiMessage }),
    currentId: Schema.optional(Schema.NullOr(Schema.String))
  })),
  timestamp: Schema.optional(Schema.NullOr(Epoch))
}

/** One chat of Open WebUI's "Export chats": the stored record (`chat` holding the history), or the chat alone. */
export const OpenWebUiChat = Schema.Struct({
  ...OpenWebUiChatBody,
  id: Schema.optional(Schema.NullOr(Schema.String)),
  chat: Schema.optional(Schema.Struct(OpenWebUiChatBody)),
  created_at: Schema.optional(Schema.NullOr(Epoch)),
  pinned: Schema.optional(Schema.NullOr(Schema.Boolean)),
  archived: Schema.optional(Schema.NullOr(Schema.Boolean))
})
export type OpenWebUiChat = typeof OpenWebUiChat.Type

export const OpenWebUiExport = OneOrMany(OpenWebUiChat).annotations({
  description: "The JSON of Open WebUI's \"Export chats\": an array of chat records (or one)"
})

export const ChatGptNode = Schema.Struct({
  message: Schema.optional(Schema.NullOr(Schema.Struct({
    author: Schema.Struct({ role: Schema.String }),
    create_time: Schema.optional(Schema.NullOr(Epoch)),
    content: Schema.Struct({
      content_type: Schema.String,
      parts: Schema.optional(Schema.NullOr(Schema.Array(Schema.Unknown)))
    }),
    status: Schema.optional(Schema.NullOr(Schema.String)),
    recipient: Schema.optional(Schema.NullOr(Schema.String)),
    metadata: Schema.optional(Schema.NullOr(Schema.Struct({
      is_visually_hidden_from_conversation: Schema.optional(Schema.NullOr(Schema.Boolean)),
      model_slug: Schema.optional(Schema.NullOr(Schema.String))
    })))
  }))),
  parent: Schema.optional(Schema.NullOr(Schema.String)),
  children: Schema.optional(Schema.NullOr(Schema.Array(Schema.String)))
})
export type ChatGptNode = typeof ChatGptNode.Type

/** One conversation of ChatGPT's `conversations.json` ("Export data"). */
export const ChatGptConversation = Schema.Struct({
  id: Schema.optional(Schema.NullOr(Schema.String)),
  conversation_id: Schema.optional(Schema.NullOr(Schema.String)),
  title: Schema.optional(Schema.NullOr(Schema.String)),
  create_time: Schema.optional(Schema.NullOr(Epoch)),
  mapping: Schema.Record({ key: Schema.String, value: ChatGptNode }),
  current_node: Schema.optional(Schema.NullOr(Schema.String)),
  is_archived: Schema.optional(Schema.NullOr(Schema.Boolean))
})
export type ChatGptConversation = typeof ChatGptConversation.Type

export const ChatGptExport = OneOrMany(ChatGptConversation).annotations({
  description: "ChatGPT's `conversations.json` (from \"Export data\"): an array of conversations (or one)"
})

export class ImportedConversation extends Schema.Class<ImportedConversation>("ImportedConversation")({
  id: ConversationId,
  sourceId: Schema.NullOr(Schema.String).annotations({ description: "Its id in the file, when it had one" }),
  title: Schema.String,
  messageCount: NonNegativeInt,
  skippedCount: NonNegativeInt.annotations({
    description: "Messages of the file left out: system, hidden, tool and reasoning ones, and those without text"
  })
}) {}

export class ImportSummary extends Schema.Class<ImportSummary>("ImportSummary")({
  conversations: Schema.Array(ImportedConversation).annotations({ description: "In the file's order" }),
  messageCount: NonNegativeInt,
  skippedCount: NonNegativeInt
}) {}

const Markdown = HttpApiSchema.Text({ contentType: "text/markdown; charset=utf-8" })

export class ConversationsApi extends HttpApiGroup.make("conversations")
  .add(
    HttpApiEndpoint.post("createConversation", "/api/v1/conversations")
      .setPayload(request(CreateConversationPayload))
      .addSuccess(ConversationView, { status: 201 })
  )
  .add(
    HttpApiEndpoint.get("listConversations", "/api/v1/conversations")
      .setUrlParams(ConversationListQuery)
      .addSuccess(Page(ConversationView))
      .annotate(OpenApi.Summary, "Your conversations: pinned first, then the most recently updated")
  )
  .add(
    HttpApiEndpoint.post("importConversation", importPath)
      .setPayload(request(ConversationExport))
      .addSuccess(ConversationView, { status: 201 })
      .annotate(OpenApi.Summary, "Import an exported conversation as a new one")
  )
  .add(
    HttpApiEndpoint.post("importOpenWebUi", `${importPath}/open-webui`)
      .setPayload(request(OpenWebUiExport))
      .addSuccess(ImportSummary, { status: 201 })
      .annotate(OpenApi.Summary, "Import the chats of an Open WebUI export as new conversations (all or none)")
  )
  .add(
    HttpApiEndpoint.post("importChatGpt", `${importPath}/chatgpt`)
      .setPayload(request(ChatGptExport))
      .addSuccess(ImportSummary, { status: 201 })
      .annotate(OpenApi.Summary, "Import ChatGPT's conversations.json as new conversations (all or none)")
  )
  .add(
    HttpApiEndpoint.get("getConversation", "/api/v1/conversations/:id")
      .setPath(ConversationPath)
      .addSuccess(ConversationView)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.patch("updateConversation", "/api/v1/conversations/:id")
      .setPath(ConversationPath)
      .setPayload(request(UpdateConversationPayload))
      .addSuccess(ConversationView)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Rename, set the default model or config, pin, archive")
  )
  .add(
    HttpApiEndpoint.del("deleteConversation", "/api/v1/conversations/:id")
      .setPath(ConversationPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Move to the trash (restorable)")
  )
  .add(
    HttpApiEndpoint.post("restoreConversation", "/api/v1/conversations/:id/restore")
      .setPath(ConversationPath)
      .addSuccess(ConversationView)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Take out of the trash")
  )
  .add(
    HttpApiEndpoint.post("purgeConversation", "/api/v1/conversations/:id/purge")
      .setPath(ConversationPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Delete for good, with every message and thread")
  )
  .add(
    HttpApiEndpoint.get("exportConversation", "/api/v1/conversations/:id/export")
      .setPath(ConversationPath)
      .addSuccess(ConversationExport)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "The whole conversation as JSON (importable)")
  )
  .add(
    HttpApiEndpoint.get("exportConversationMarkdown", "/api/v1/conversations/:id/export/markdown")
      .setPath(ConversationPath)
      .addSuccess(Markdown)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "The active branch as Markdown")
  )
  .add(
    HttpApiEndpoint.get("listMessages", "/api/v1/conversations/:id/messages")
      .setPath(ConversationPath)
      .setUrlParams(MessageListQuery)
      .addSuccess(MessageList)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "The active branch (root to leaf) or the whole tree")
  )
  .add(
    HttpApiEndpoint.post("appendMessage", "/api/v1/conversations/:id/messages")
      .setPath(ConversationPath)
      .setPayload(request(AppendMessagePayload))
      .addSuccess(MessageView, { status: 201 })
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Add a message under the current leaf (or `parentId`); it becomes the leaf")
  )
  .add(
    HttpApiEndpoint.get("getMessage", "/api/v1/conversations/:id/messages/:messageId")
      .setPath(MessagePath)
      .addSuccess(MessageView)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.post("editMessage", "/api/v1/conversations/:id/messages/:messageId/edit")
      .setPath(MessagePath)
      .setPayload(request(EditMessagePayload))
      .addSuccess(MessageView, { status: 201 })
      .addError(NotFound)
      .annotate(
        OpenApi.Summary,
        "Edit a message: a new sibling branch with the new content becomes the leaf (the original is kept)"
      )
  )
  .add(
    HttpApiEndpoint.del("deleteMessage", "/api/v1/conversations/:id/messages/:messageId")
      .setPath(MessagePath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Delete a message and the branch below it")
  )
  .add(
    HttpApiEndpoint.put("setCurrentLeaf", "/api/v1/conversations/:id/current-leaf")
      .setPath(ConversationPath)
      .setPayload(request(SetCurrentLeafPayload))
      .addSuccess(ConversationView)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Switch the active branch")
  )
  .add(
    HttpApiEndpoint.post("createThread", "/api/v1/conversations/:id/threads")
      .setPath(ConversationPath)
      .setPayload(request(CreateThreadPayload))
      .addSuccess(ThreadView, { status: 201 })
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Start a side thread on a message")
  )
  .add(
    HttpApiEndpoint.get("listThreads", "/api/v1/conversations/:id/threads")
      .setPath(ConversationPath)
      .setUrlParams(PageParams)
      .addSuccess(Page(ThreadView))
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.patch("updateThread", "/api/v1/conversations/:id/threads/:threadId")
      .setPath(ThreadPath)
      .setPayload(request(UpdateThreadPayload))
      .addSuccess(ThreadView)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.del("deleteThread", "/api/v1/conversations/:id/threads/:threadId")
      .setPath(ThreadPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.get("listThreadMessages", "/api/v1/conversations/:id/threads/:threadId/messages")
      .setPath(ThreadPath)
      .setUrlParams(PageParams)
      .addSuccess(Page(MessageView))
      .addError(NotFound)
      .annotate(OpenApi.Summary, "A thread's messages, oldest first")
  )
  .add(
    HttpApiEndpoint.post("appendThreadMessage", "/api/v1/conversations/:id/threads/:threadId/messages")
      .setPath(ThreadPath)
      .setPayload(request(AppendThreadMessagePayload))
      .addSuccess(MessageView, { status: 201 })
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.get("search", "/api/v1/search")
      .setUrlParams(SearchQuery)
      .addSuccess(Page(SearchHit))
      .annotate(OpenApi.Summary, "Search your conversation titles and messages, best matches first")
  )
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Conversations, their branching messages and threads, search, export and import")
{}

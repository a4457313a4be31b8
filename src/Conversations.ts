/**
 * The conversation history of each user: conversations (trash, archive,
 * pins), the message tree with its active branch, threads, search, export
 * and import.
 *
 * Messages form a tree through `parentId`; the conversation points at its
 * current leaf, and the active branch is the path from the root to it.
 * Nothing is overwritten: editing adds a sibling with the new content and
 * makes it the leaf. Every change of the tree runs in one transaction with
 * the conversation row locked, so the leaf, the count and the rows agree.
 */
import { Model, SqlClient } from "@effect/sql"
import { Clock, DateTime, Duration, Effect, Either, Layer, Option, Schema } from "effect"
import { AuditLog } from "./Audit.js"
import { requirePermission } from "./Auth/Policy.js"
import { AppConfig } from "./Config.js"
import type {
  AppendMessagePayload,
  AppendThreadMessagePayload,
  CreateConversationPayload,
  CreateThreadPayload,
  EditMessagePayload,
  SetCurrentLeafPayload,
  UpdateConversationPayload,
  UpdateThreadPayload
} from "./Conversations/Api.js"
import {
  type ChatGptConversation,
  type ConversationExport,
  type ExportedMessage,
  ImportedConversation,
  ImportSummary,
  MessageList,
  type OpenWebUiChat,
  SearchHit
} from "./Conversations/Api.js"
import {
  ConversationRepo,
  type ConversationSummaryRow,
  type ListState,
  type ThreadRow
} from "./Conversations/ConversationRepo.js"
import { exportDocument } from "./Conversations/Export.js"
import { fromChatGpt, fromOpenWebUi, type ImportSource, type TranslatedConversation } from "./Conversations/Imports.js"
import { SearchRepo, searchTerms, snippet } from "./Conversations/SearchRepo.js"
import type { Actor, CurrentActor } from "./Domain/Actor.js"
import {
  Conversation,
  ConversationView,
  LastMessage,
  Message,
  type MessageRole,
  type MessageStatus,
  type MessageView,
  Thread,
  ThreadView
} from "./Domain/Conversation.js"
import { FieldIssue, type Forbidden, invalid, type NotFound, orNotFound, ValidationError } from "./Domain/Errors.js"
import type { JsonObject } from "./Domain/Fields.js"
import {
  type ConversationId,
  type FileId,
  generateUuid,
  type LlmModelId,
  type MessageId,
  MessageId as MessageIdSchema,
  type ModelConfigId,
  type ThreadId
} from "./Domain/Ids.js"
import {
  createdPosition,
  cursorOf,
  decodeCursor,
  defaultLimit,
  pageByCreation,
  Position,
  toPage
} from "./Domain/Pagination.js"
import { GraphRepo } from "./Graph/GraphRepo.js"
import { everyHour } from "./Housekeeping.js"
import { ModelConfigsRepo } from "./Models/ModelConfigsRepo.js"
import { ModelsRepo } from "./Models/ModelsRepo.js"
import { inTransaction, storedNow } from "./Sql.js"

// The views below are built from rows the repositories have already decoded: `true` skips checking them twice.

export const toConversationView = (row: ConversationSummaryRow) =>
  new ConversationView({
    id: row.id,
    title: row.title,
    modelId: row.modelId,
    modelConfigId: row.modelConfigId,
    currentLeafId: row.currentLeafId,
    pinned: row.pinned,
    archived: row.archived,
    deletedAt: Option.getOrNull(row.deletedAt),
    messageCount: row.messageCount,
    lastMessage: row.currentLeafId !== null && row.lastRole !== null && row.lastStatus !== null &&
        row.lastCreatedAt !== null
      ? new LastMessage({
        id: row.currentLeafId,
        role: row.lastRole,
        status: row.lastStatus,
        preview: row.lastPreview ?? "",
        createdAt: row.lastCreatedAt
      }, true)
      : null,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt
  }, true)

const toThreadView = (row: ThreadRow) =>
  new ThreadView({
    id: row.id,
    conversationId: row.conversationId,
    anchorMessageId: row.anchorMessageId,
    title: row.title,
    messageCount: row.messageCount,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt
  }, true)

/** Where a conversation list page ends: pinned, then time (updated, or deleted in the trash), then id. */
const ListPosition = Schema.Struct({ ...Position.fields, pinned: Schema.Boolean })
const listCursor = cursorOf(ListPosition)
/** Where the next page of the active branch starts (walking up from this message). */
const branchCursor = cursorOf(Schema.Struct({ from: MessageIdSchema }))
/** How many messages of a branch a chat turn reads at a time (see `branchUntil`). */
const branchPage = 128

/**
 * An effect to run between the steps of a long piece of work (a large import: checking thousands of
 * conversations, writing them): once the work has held the event loop for 50 ms, it lets it run
 * (a timer's turn), so that answers being streamed and requests without a query go on meanwhile. On
 * SQLite every statement runs on the event loop too.
 */
const letLoopRun = Effect.map(Clock.currentTimeMillis, (started) => {
  let sliceStart = started
  return Effect.flatMap(Clock.currentTimeMillis, (now) =>
    now - sliceStart < 50
      ? Effect.void
      : Effect.zipRight(
        Effect.sleep(Duration.zero),
        Effect.map(Clock.currentTimeMillis, (at) => {
          sliceStart = at
        })
      ))
})
const SearchPosition = Schema.Struct({ offset: Schema.Int.pipe(Schema.between(0, 10_000)) })
const searchCursor = cursorOf(SearchPosition)

/** A path into a request's body, as a `FieldIssue` names it. */
type Path = ReadonlyArray<string | number>

const roleHeadings: Record<MessageRole, string> = {
  system: "System",
  user: "User",
  assistant: "Assistant",
  tool: "Tool"
}

/** A fresh id of an entity, given to an insert instead of the generated one (so the caller knows it). */
const freshId = <A extends string>() => Effect.map(generateUuid, (id) => Model.Override(id as A))

/** A message as it is inserted: the columns a caller does not choose get their defaults. */
const newMessage = (id: MessageId, fields: {
  readonly conversationId: ConversationId
  readonly parentId: MessageId | null
  readonly threadId?: ThreadId | null
  readonly role: MessageRole
  readonly content: string
  readonly metadata?: JsonObject | undefined
  readonly editedFromId?: MessageId | null
  readonly status?: MessageStatus
  readonly modelId?: LlmModelId | null
  readonly modelName?: string | null
}) =>
  Message.insert.make({
    id: Model.Override(id),
    conversationId: fields.conversationId,
    parentId: fields.parentId,
    threadId: fields.threadId ?? null,
    role: fields.role,
    content: fields.content,
    status: fields.status ?? "complete",
    modelId: fields.modelId ?? null,
    modelName: fields.modelName ?? null,
    promptTokens: null,
    completionTokens: null,
    toolCalls: [],
    metadata: fields.metadata ?? {},
    editedFromId: fields.editedFromId ?? null,
    deletedAt: Option.none()
  }, { disableValidation: true })

export class Conversations extends Effect.Service<Conversations>()("Conversations", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* ConversationRepo
    const graph = yield* GraphRepo
    const searchRepo = yield* SearchRepo
    const models = yield* ModelsRepo
    const configs = yield* ModelConfigsRepo
    const audit = yield* AuditLog
    const transaction = inTransaction(sql)

    const readable = requirePermission("conversations:read")
    const writable = requirePermission("conversations:write")

    const notFound = orNotFound("No such conversation")

    /** The actor's conversation (in the trash too). */
    const findOwn = (actor: Actor, id: ConversationId) => repo.findSummary(actor.userId, id).pipe(notFound)

    /** The actor's conversation, locked for a change, unless it is in the trash. */
    const lockLive = (actor: Actor, id: ConversationId) =>
      repo.lockConversation(actor.userId, id).pipe(
        Effect.map(Option.filter((conversation) => Option.isNone(conversation.deletedAt))),
        notFound
      )

    const viewOf = (actor: Actor, id: ConversationId) => Effect.map(findOwn(actor, id), toConversationView)

    /** A live message of the conversation's tree (not of a thread). */
    const findTreeMessage = (conversationId: ConversationId, id: MessageId, path: ReadonlyArray<string>) =>
      repo.findMessage(conversationId, id).pipe(
        Effect.map(Option.filter((message) => message.threadId === null)),
        Effect.flatMap(Option.match({
          onNone: () => Effect.fail(invalid(path, "No such message in this conversation")),
          onSome: Effect.succeed
        }))
      )

    /** A default model must be one users may pick (enabled, of an enabled provider); a preset, global or the actor's. */
    const checkReferences = (
      actor: Actor,
      fields: {
        readonly modelId?: LlmModelId | null | undefined
        readonly modelConfigId?: ModelConfigId | null | undefined
      }
    ) =>
      Effect.gen(function*() {
        const issues: Array<FieldIssue> = []
        if (fields.modelId && Option.isNone(yield* models.findUsable(fields.modelId))) {
          issues.push(new FieldIssue({ path: ["modelId"], message: "No such model" }))
        }
        if (fields.modelConfigId && Option.isNone(yield* configs.findVisible(fields.modelConfigId, actor.userId))) {
          issues.push(new FieldIssue({ path: ["modelConfigId"], message: "No such model config" }))
        }
        if (issues.length > 0) return yield* new ValidationError({ message: "Unknown references", issues })
      })

    // --- conversations

    const create = (payload: CreateConversationPayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* checkReferences(actor, payload)
        const conversationId = yield* freshId<ConversationId>()
        const row = Conversation.insert.make({
          id: conversationId,
          userId: actor.userId,
          title: payload.title ?? "",
          modelId: payload.modelId ?? null,
          modelConfigId: payload.modelConfigId ?? null,
          currentLeafId: null,
          pinned: false,
          archived: false,
          deletedAt: Option.none(),
          messageCount: 0
        })
        yield* repo.insertConversation(row)
        return yield* viewOf(actor, conversationId)
      }).pipe(Effect.withSpan("Conversations.create"))

    const list = (query: {
      readonly limit?: number | undefined
      readonly cursor?: string | undefined
      readonly archived?: boolean | undefined
      readonly trashed?: boolean | undefined
    }) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const limit = query.limit ?? defaultLimit
        const state: ListState = query.trashed ? "trash" : query.archived ? "archived" : "active"
        const after = yield* listCursor.decode(query.cursor)
        const rows = yield* repo.listSummaries(actor.userId, state, after, limit)
        const page = toPage(rows, limit, (row) => ({
          pinned: state === "trash" ? false : row.pinned,
          at: DateTime.formatIso(
            state === "trash" ? Option.getOrElse(row.deletedAt, () => row.updatedAt) : row.updatedAt
          ),
          id: row.id
        }), listCursor.encode)
        return { items: page.items.map(toConversationView), nextCursor: page.nextCursor }
      }).pipe(Effect.withSpan("Conversations.list"))

    const get = (id: ConversationId) =>
      Effect.flatMap(readable, (actor) => viewOf(actor, id)).pipe(Effect.withSpan("Conversations.get"))

    const update = (id: ConversationId, payload: UpdateConversationPayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* checkReferences(actor, payload)
        yield* transaction(Effect.gen(function*() {
          yield* lockLive(actor, id)
          const fields: Record<string, unknown> = {}
          if (payload.title !== undefined) fields.title = payload.title
          if (payload.modelId !== undefined) fields.modelId = payload.modelId
          if (payload.modelConfigId !== undefined) fields.modelConfigId = payload.modelConfigId
          if (payload.pinned !== undefined) fields.pinned = payload.pinned ? 1 : 0
          if (payload.archived !== undefined) fields.archived = payload.archived ? 1 : 0
          if (Object.keys(fields).length > 0) yield* repo.updateConversation(id, fields)
        }))
        return yield* viewOf(actor, id)
      }).pipe(Effect.withSpan("Conversations.update"))

    const trash = (id: ConversationId) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* transaction(Effect.gen(function*() {
          yield* lockLive(actor, id)
          yield* repo.updateConversation(id, { deletedAt: yield* storedNow }, false)
        }))
      }).pipe(Effect.withSpan("Conversations.trash"))

    const restore = (id: ConversationId) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* findOwn(actor, id)
        yield* repo.updateConversation(id, { deletedAt: null })
        return yield* viewOf(actor, id)
      }).pipe(Effect.withSpan("Conversations.restore"))

    /** Deletes a conversation for good, with what the knowledge graph took from it. */
    const purge = (id: ConversationId) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* findOwn(actor, id)
        yield* transaction(Effect.all([
          repo.purgeConversation(id),
          graph.forgetSource(actor.userId, "conversation", id),
          audit.record({ action: "conversation.purged", actor, target: { type: "conversation", id } })
        ], { discard: true }))
      }).pipe(Effect.withSpan("Conversations.purge"))

    // --- the message tree

    const listMessages = (
      id: ConversationId,
      query: {
        readonly view: "active" | "tree"
        readonly limit?: number | undefined
        readonly cursor?: string | undefined
      }
    ) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const conversation = yield* findOwn(actor, id)
        if (query.view === "tree") {
          const limit = query.limit ?? 100
          const rows = yield* repo.treePage(id, yield* decodeCursor(query.cursor), limit)
          const page = toPage(rows, limit, createdPosition)
          return new MessageList({
            currentLeafId: conversation.currentLeafId,
            items: page.items,
            nextCursor: page.nextCursor
          }, true)
        }
        // A page of the branch ends at the leaf, or where the previous page (nearer the leaf) stopped.
        const from = Option.match(yield* branchCursor.decode(query.cursor), {
          onNone: () => conversation.currentLeafId,
          onSome: ({ from }) => from
        })
        const rows = from === null ? [] : yield* repo.activeBranch(id, from, query.limit)
        const more = query.limit !== undefined && rows.length > query.limit
        return new MessageList({
          currentLeafId: conversation.currentLeafId,
          items: more ? rows.slice(1) : rows,
          nextCursor: more ? branchCursor.encode({ from: rows[0]!.id }) : null
        }, true)
      }).pipe(Effect.withSpan("Conversations.listMessages"))

    /** Inserts `messages` (a chain, or one) into the locked conversation `id`, `leafId` (the last) the new leaf. */
    const addLeaf = (id: ConversationId, leafId: MessageId, ...messages: Array<typeof Message.insert.Type>) =>
      Effect.gen(function*() {
        yield* repo.insertMessages(messages)
        yield* repo.recordTreeChange(id, leafId, messages.length)
        return leafId
      })

    /**
     * The branch that ends at `leafId`, root first, read from the leaf up a page at a time until
     * there is no more or `enough` (given what was read, newest first) says so.
     */
    const branchUntil = (
      id: ConversationId,
      leafId: MessageId,
      enough: (newestFirst: ReadonlyArray<MessageView>) => boolean
    ) =>
      Effect.gen(function*() {
        const pages: Array<ReadonlyArray<MessageView>> = []
        const newestFirst: Array<MessageView> = []
        let from: MessageId = leafId
        while (true) {
          // Root first: the page, and before it, when there is more, the message it continues from.
          const rows = yield* repo.activeBranch(id, from, branchPage)
          const more = rows.length > branchPage
          const page = more ? rows.slice(1) : rows
          pages.unshift(page)
          for (let i = page.length - 1; i >= 0; i--) newestFirst.push(page[i]!)
          if (!more || enough(newestFirst)) return pages.flat()
          from = rows[0]!.id
        }
      })

    /**
     * Opens an answer, in one transaction committed before any provider is called: the user's
     * message (when `content` is given) under `parentId` or the current leaf, and below it an
     * empty `streaming` assistant message, which becomes the leaf. Without `content` (regenerate,
     * continue) the answer goes under `parentId` or the leaf, which must be a user or tool message.
     * `prepare` runs first in that transaction, with the conversation as locked (its model, its
     * preset): it names the answer's model, and if it fails nothing is written. Gives both
     * messages as stored, and the branch the answer follows (root first, up to its parent).
     */
    const openAnswer = <
      P extends {
        readonly model: { readonly id: LlmModelId; readonly name: string }
        /** What the model is sent is cut there: the branch is read only until this says it is enough. */
        readonly enough?: (newestFirst: ReadonlyArray<MessageView>) => boolean
      },
      E,
      R
    >(
      id: ConversationId,
      input: {
        readonly content?: string | undefined
        readonly metadata?: JsonObject | undefined
        readonly parentId?: MessageId | undefined
        /** Files the question carries (checked by the caller). */
        readonly fileIds?: ReadonlyArray<FileId> | undefined
      },
      prepare: (conversation: Conversation) => Effect.Effect<P, E, R>
    ): Effect.Effect<
      {
        readonly conversation: Conversation
        readonly prepared: P
        readonly question: MessageView | null
        readonly answer: MessageView
        readonly branch: ReadonlyArray<MessageView>
      },
      NotFound | ValidationError | Forbidden | E,
      CurrentActor | R
    > =>
      Effect.gen(function*() {
        const actor = yield* writable
        const { answerId, conversation, prepared, questionId } = yield* transaction(Effect.gen(function*() {
          const conversation = yield* lockLive(actor, id)
          const prepared = yield* prepare(conversation)
          const parentId = input.parentId ?? conversation.currentLeafId
          if (input.content === undefined) {
            const parent = parentId === null ? null : yield* findTreeMessage(id, parentId, ["parentId"])
            if (parent === null || (parent.role !== "user" && parent.role !== "tool")) {
              return yield* invalid(["parentId"], "An answer follows a user or tool message")
            }
          } else if (input.parentId !== undefined) {
            yield* findTreeMessage(id, input.parentId, ["parentId"])
          }
          const questionId = input.content === undefined ? null : yield* freshId<MessageId>()
          const answerId = yield* freshId<MessageId>()
          const question = questionId === null ? [] : [
            newMessage(questionId, {
              conversationId: id,
              parentId,
              role: "user",
              content: input.content!,
              metadata: input.metadata
            })
          ]
          const answer = newMessage(answerId, {
            conversationId: id,
            parentId: questionId ?? parentId,
            role: "assistant",
            content: "",
            status: "streaming",
            modelId: prepared.model.id,
            modelName: prepared.model.name
          })
          yield* addLeaf(id, answerId, ...question, answer)
          if (questionId !== null && input.fileIds !== undefined && input.fileIds.length > 0) {
            yield* repo.attachFiles(questionId, input.fileIds)
          }
          return { answerId, conversation, prepared, questionId }
        }))
        // One read gives both messages as stored and what the model is sent: the branch, root first,
        // ends with the question (if any) and the answer.
        const branch = yield* Effect.orDie(
          prepared.enough === undefined ? repo.activeBranch(id, answerId) : branchUntil(id, answerId, prepared.enough)
        )
        const answer = branch.at(-1)
        if (answer === undefined || answer.id !== answerId) {
          return yield* Effect.die(new Error("The answer was not stored"))
        }
        return {
          conversation,
          prepared,
          question: questionId === null ? null : branch.at(-2) ?? null,
          answer,
          branch: branch.slice(0, -1)
        }
      }).pipe(Effect.withSpan("Conversations.openAnswer"))

    /**
     * Opens an answer in a thread, as `openAnswer` does in the tree: the user's message and an empty
     * `streaming` answer appended to the thread, in one transaction committed before any provider
     * is called (`prepare` first, as there). What the answer follows: the branch from the root to
     * the thread's anchor, then the thread's messages up to the question, oldest first.
     */
    const openThreadAnswer = <P extends { readonly model: { readonly id: LlmModelId; readonly name: string } }, E, R>(
      id: ConversationId,
      threadId: ThreadId,
      input: {
        readonly content: string
        readonly metadata?: JsonObject | undefined
        readonly fileIds?: ReadonlyArray<FileId> | undefined
      },
      prepare: (conversation: Conversation) => Effect.Effect<P, E, R>
    ) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const { answerId, conversation, prepared, questionId, thread } = yield* transaction(Effect.gen(function*() {
          const conversation = yield* lockLive(actor, id)
          const thread = yield* findThread(id, threadId)
          const prepared = yield* prepare(conversation)
          const questionId = yield* freshId<MessageId>()
          const answerId = yield* freshId<MessageId>()
          const inThread = { conversationId: id, parentId: null, threadId }
          yield* repo.insertMessages([
            newMessage(questionId, { ...inThread, role: "user", content: input.content, metadata: input.metadata }),
            newMessage(answerId, {
              ...inThread,
              role: "assistant",
              content: "",
              status: "streaming",
              modelId: prepared.model.id,
              modelName: prepared.model.name
            })
          ])
          if (input.fileIds !== undefined && input.fileIds.length > 0) {
            yield* repo.attachFiles(questionId, input.fileIds)
          }
          yield* repo.updateThread(threadId, {})
          yield* repo.touchConversation(id)
          return { answerId, conversation, prepared, questionId, thread }
        }))
        const anchored = yield* repo.activeBranch(id, thread.anchorMessageId)
        const messages = yield* repo.threadMessages(threadId)
        const at = messages.findIndex((message) => message.id === answerId)
        const question = messages.find((message) => message.id === questionId)
        if (at < 0 || question === undefined) return yield* Effect.die(new Error("The answer was not stored"))
        return {
          conversation,
          prepared,
          question,
          answer: messages[at]!,
          branch: [...anchored, ...messages.slice(0, at)]
        }
      }).pipe(Effect.withSpan("Conversations.openThreadAnswer"))

    const getMessage = (id: ConversationId, messageId: MessageId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        yield* findOwn(actor, id)
        return yield* repo.findMessage(id, messageId).pipe(orNotFound("No such message"))
      }).pipe(Effect.withSpan("Conversations.getMessage"))

    /** A message this request has just written. */
    const readBack = (id: ConversationId, messageId: MessageId) =>
      repo.findMessage(id, messageId).pipe(Effect.flatten, Effect.orDie)

    /**
     * A tool result answers a call of the answer above it: its parent is that answer, or a result of
     * another of its calls.
     */
    const checkToolResult = (id: ConversationId, parentId: MessageId | null, toolCallId: string | undefined) =>
      Effect.gen(function*() {
        if (toolCallId === undefined) return yield* invalid(["toolCallId"], "A tool message names the call it answers")
        let above = parentId
        while (above !== null) {
          const message = yield* findTreeMessage(id, above, ["parentId"])
          if (message.role === "tool") {
            above = message.parentId
            continue
          }
          if (message.role === "assistant" && message.toolCalls.some((call) => call.id === toolCallId)) return
          break
        }
        return yield* invalid(["toolCallId"], "No call of the answer above has this id")
      })

    const appendMessage = (id: ConversationId, payload: AppendMessagePayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const messageId = yield* transaction(Effect.gen(function*() {
          const conversation = yield* lockLive(actor, id)
          const parentId = payload.parentId ?? conversation.currentLeafId
          if (payload.parentId !== undefined) yield* findTreeMessage(id, payload.parentId, ["parentId"])
          if (payload.role === "tool") yield* checkToolResult(id, parentId, payload.toolCallId)
          else if (payload.toolCallId !== undefined) {
            return yield* invalid(["toolCallId"], "Only a tool message answers a tool call")
          }
          const messageId = yield* freshId<MessageId>()
          return yield* addLeaf(
            id,
            messageId,
            newMessage(messageId, {
              conversationId: id,
              parentId,
              role: payload.role,
              content: payload.content,
              metadata: payload.toolCallId === undefined
                ? payload.metadata
                : { ...payload.metadata, toolCallId: payload.toolCallId }
            })
          )
        }))
        return yield* readBack(id, messageId)
      }).pipe(Effect.withSpan("Conversations.appendMessage"))

    const editMessage = (id: ConversationId, messageId: MessageId, payload: EditMessagePayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const editId = yield* transaction(Effect.gen(function*() {
          yield* lockLive(actor, id)
          const original = yield* repo.findMessage(id, messageId).pipe(
            Effect.map(Option.filter((message) => message.threadId === null)),
            orNotFound("No such message")
          )
          const editId = yield* freshId<MessageId>()
          const metadata = payload.metadata ?? original.metadata
          const added = yield* addLeaf(
            id,
            editId,
            newMessage(editId, {
              conversationId: id,
              parentId: original.parentId,
              role: original.role,
              content: payload.content,
              // The files a question carries stay with its new version, unless new metadata names others.
              metadata: "attachments" in original.metadata && !("attachments" in metadata)
                ? { ...metadata, attachments: original.metadata["attachments"] }
                : metadata,
              editedFromId: original.id
            })
          )
          yield* repo.copyAttachments(original.id, editId)
          return added
        }))
        return yield* readBack(id, editId)
      }).pipe(Effect.withSpan("Conversations.editMessage"))

    const deleteMessage = (id: ConversationId, messageId: MessageId) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* transaction(Effect.gen(function*() {
          const conversation = yield* lockLive(actor, id)
          const message = yield* repo.findMessage(id, messageId).pipe(orNotFound("No such message"))
          if (message.threadId !== null) {
            yield* repo.deleteSubtree(message)
            yield* repo.touchConversation(id)
            return
          }
          // The leaf moves only if it was in the deleted branch: then to the newest branch left below the parent.
          const leafDeleted = conversation.currentLeafId !== null &&
            (yield* repo.isOnPathTo(conversation.currentLeafId, messageId))
          const deleted = yield* repo.deleteSubtree(message)
          const leaf = leafDeleted
            ? yield* repo.newestLeafBelow(id, Option.fromNullable(message.parentId))
            : Option.fromNullable(conversation.currentLeafId)
          yield* repo.recordTreeChange(id, Option.getOrNull(leaf), -deleted.length)
        }))
      }).pipe(Effect.withSpan("Conversations.deleteMessage"))

    const setCurrentLeaf = (id: ConversationId, payload: SetCurrentLeafPayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* transaction(Effect.gen(function*() {
          yield* lockLive(actor, id)
          yield* findTreeMessage(id, payload.messageId, ["messageId"])
          const leaf = payload.descend
            ? Option.getOrElse(yield* repo.newestLeafBelow(id, Option.some(payload.messageId)), () => payload.messageId)
            : payload.messageId
          yield* repo.updateConversation(id, { currentLeafId: leaf }, false)
        }))
        return yield* viewOf(actor, id)
      }).pipe(Effect.withSpan("Conversations.setCurrentLeaf"))

    // --- threads

    const findThread = (id: ConversationId, threadId: ThreadId) =>
      repo.findThread(id, threadId).pipe(orNotFound("No such thread"))

    const createThread = (id: ConversationId, payload: CreateThreadPayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const threadId = yield* transaction(Effect.gen(function*() {
          yield* lockLive(actor, id)
          const anchor = yield* findTreeMessage(id, payload.messageId, ["messageId"])
          const threadId = yield* freshId<ThreadId>()
          const row = Thread.insert.make({
            id: threadId,
            conversationId: id,
            anchorMessageId: anchor.id,
            userId: actor.userId,
            title: payload.title ?? anchor.content.slice(0, 80)
          })
          yield* repo.insertThread(row)
          yield* repo.touchConversation(id)
          return threadId
        }))
        return toThreadView(yield* findThread(id, threadId))
      }).pipe(Effect.withSpan("Conversations.createThread"))

    const listThreads = (
      id: ConversationId,
      page: { readonly limit?: number | undefined; readonly cursor?: string | undefined }
    ) =>
      Effect.gen(function*() {
        const actor = yield* readable
        yield* findOwn(actor, id)
        const result = yield* pageByCreation(page, (after, rows) => repo.threadsPage(id, after, rows))
        return { items: result.items.map(toThreadView), nextCursor: result.nextCursor }
      }).pipe(Effect.withSpan("Conversations.listThreads"))

    const updateThread = (id: ConversationId, threadId: ThreadId, payload: UpdateThreadPayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* findOwn(actor, id)
        yield* findThread(id, threadId)
        yield* repo.updateThread(threadId, { title: payload.title })
        return toThreadView(yield* findThread(id, threadId))
      }).pipe(Effect.withSpan("Conversations.updateThread"))

    const deleteThread = (id: ConversationId, threadId: ThreadId) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* findOwn(actor, id)
        yield* findThread(id, threadId)
        yield* repo.deleteThread(threadId)
      }).pipe(Effect.withSpan("Conversations.deleteThread"))

    const listThreadMessages = (
      id: ConversationId,
      threadId: ThreadId,
      page: { readonly limit?: number | undefined; readonly cursor?: string | undefined }
    ) =>
      Effect.gen(function*() {
        const actor = yield* readable
        yield* findOwn(actor, id)
        yield* findThread(id, threadId)
        return yield* pageByCreation(page, (after, rows) => repo.threadMessagesPage(threadId, after, rows))
      }).pipe(Effect.withSpan("Conversations.listThreadMessages"))

    const appendThreadMessage = (id: ConversationId, threadId: ThreadId, payload: AppendThreadMessagePayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const messageId = yield* transaction(Effect.gen(function*() {
          yield* lockLive(actor, id)
          yield* findThread(id, threadId)
          const messageId = yield* freshId<MessageId>()
          const message = newMessage(messageId, {
            conversationId: id,
            parentId: null,
            threadId,
            role: payload.role,
            content: payload.content,
            metadata: payload.metadata
          })
          yield* repo.insertMessages([message])
          yield* repo.updateThread(threadId, {})
          yield* repo.touchConversation(id)
          return messageId
        }))
        return yield* readBack(id, messageId)
      }).pipe(Effect.withSpan("Conversations.appendThreadMessage"))

    // --- search

    const search = (
      query: { readonly q: string; readonly limit?: number | undefined; readonly cursor?: string | undefined }
    ) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const terms = searchTerms(query.q)
        if (terms.length === 0) return yield* Effect.fail(invalid(["q"], "The query has no words to search for"))
        const limit = query.limit ?? 20
        const offset = Option.match(yield* searchCursor.decode(query.cursor), {
          onNone: () => 0,
          onSome: (position) => position.offset
        })
        const rows = yield* searchRepo.search({ userId: actor.userId, terms, limit: limit + 1, offset })
        const items = rows.slice(0, limit).map((row) =>
          new SearchHit({
            kind: row.kind,
            conversationId: row.conversationId,
            conversationTitle: row.conversationTitle,
            messageId: row.messageId,
            threadId: row.threadId,
            role: row.role,
            snippet: snippet(row.text, terms),
            score: row.score,
            createdAt: row.createdAt
          }, true)
        )
        return {
          items,
          nextCursor: rows.length > limit && offset + limit <= 10_000
            ? searchCursor.encode({ offset: offset + limit })
            : null
        }
      }).pipe(Effect.withSpan("Conversations.search"))

    // --- export and import

    const exported = (actor: Actor, id: ConversationId, format: string) =>
      audit.record({
        action: "conversation.exported",
        actor,
        target: { type: "conversation", id },
        metadata: { format }
      })

    const exportJson = (id: ConversationId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const conversation = yield* findOwn(actor, id)
        const messages = yield* repo.allMessages(id)
        const threads = yield* repo.allThreads(id)
        yield* exported(actor, id, "json")
        return exportDocument(conversation, messages, threads, yield* DateTime.now)
      }).pipe(Effect.withSpan("Conversations.exportJson"))

    const exportMarkdown = (id: ConversationId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const conversation = yield* findOwn(actor, id)
        const branch = conversation.currentLeafId === null
          ? []
          : yield* repo.activeBranch(id, conversation.currentLeafId)
        yield* exported(actor, id, "markdown")
        const title = conversation.title.trim() === "" ? "Untitled conversation" : conversation.title
        const parts = [`# ${title.replace(/\s+/g, " ")}`, ""]
        for (const message of branch) {
          const model = message.role === "assistant" && message.modelName ? ` (${message.modelName})` : ""
          const status = message.status === "complete" ? "" : ` [${message.status}]`
          parts.push(`## ${roleHeadings[message.role]}${model}${status}`, "", message.content, "")
        }
        return parts.join("\n")
      }).pipe(Effect.withSpan("Conversations.exportMarkdown"))

    /**
     * Checks that a document's messages form a tree: unique ids, known parents, no cycles. The issues'
     * paths go through `origin`: into the file the document was translated from, if it was.
     */
    const checkImport = (document: ConversationExport, origin: (path: Path) => Path = (path) => path) =>
      Effect.gen(function*() {
        const issues: Array<FieldIssue> = []
        const byId = new Map<string, ExportedMessage>()
        document.messages.forEach((message, index) => {
          if (byId.has(message.id)) {
            issues.push(new FieldIssue({ path: ["messages", index, "id"], message: "Duplicate id" }))
          }
          byId.set(message.id, message)
        })
        document.messages.forEach((message, index) => {
          if (message.parentId !== null && !byId.has(message.parentId)) {
            issues.push(new FieldIssue({ path: ["messages", index, "parentId"], message: "No message has this id" }))
          }
        })
        // Walking up from each message must end at a root within as many steps as there are messages.
        const settled = new Set<string>()
        document.messages.forEach((message, index) => {
          const seen = new Set<string>()
          let current: ExportedMessage | undefined = message
          while (current && current.parentId !== null && !settled.has(current.id)) {
            if (seen.has(current.id)) {
              issues.push(
                new FieldIssue({ path: ["messages", index, "parentId"], message: "The parents form a cycle" })
              )
              break
            }
            seen.add(current.id)
            current = byId.get(current.parentId)
          }
          for (const id of seen) settled.add(id)
        })
        const leaf = document.conversation.currentLeafId
        if (leaf !== null && (!byId.has(leaf) || byId.get(leaf)!.deleted)) {
          issues.push(
            new FieldIssue({ path: ["conversation", "currentLeafId"], message: "Not a live message of the document" })
          )
        }
        document.threads.forEach((thread, index) => {
          if (!byId.has(thread.anchorMessageId)) {
            issues.push(
              new FieldIssue({ path: ["threads", index, "anchorMessageId"], message: "No message has this id" })
            )
          }
        })
        if (issues.length > 0) {
          return yield* new ValidationError({
            message: "The document is not a valid conversation",
            issues: issues.map((issue) => new FieldIssue({ path: origin(issue.path), message: issue.message }))
          })
        }
      })

    /** Parents before children, so every row's parent exists when it is inserted. */
    const parentsFirst = (messages: ReadonlyArray<ExportedMessage>) => {
      const children = new Map<string | null, Array<ExportedMessage>>()
      for (const message of messages) {
        const siblings = children.get(message.parentId) ?? []
        siblings.push(message)
        children.set(message.parentId, siblings)
      }
      const ordered: Array<ExportedMessage> = []
      const queue = [...(children.get(null) ?? [])]
      while (queue.length > 0) {
        const next = queue.shift()!
        ordered.push(next)
        queue.push(...(children.get(next.id) ?? []))
      }
      return ordered
    }

    /** A checked document and the rows it becomes, with new ids: what `writeImport` writes. */
    const prepareImport = (actor: Actor, document: ConversationExport, origin?: (path: Path) => Path) =>
      Effect.gen(function*() {
        yield* checkImport(document, origin)
        const ids = new Map<string, MessageId>()
        for (const message of document.messages) ids.set(message.id, (yield* generateUuid) as MessageId)
        const mapped = (ref: string | null) => (ref === null ? null : ids.get(ref) ?? null)
        const now = yield* DateTime.now
        const conversationId = yield* freshId<ConversationId>()
        const conversation = Conversation.insert.make({
          id: conversationId,
          userId: actor.userId,
          title: document.conversation.title,
          modelId: null,
          modelConfigId: null,
          currentLeafId: null,
          pinned: document.conversation.pinned,
          archived: document.conversation.archived,
          deletedAt: Option.none(),
          messageCount: 0,
          createdAt: Model.Override(document.conversation.createdAt),
          updatedAt: Model.Override(now)
        })
        const rows = parentsFirst(document.messages).map((message) =>
          Message.insert.make({
            id: Model.Override(mapped(message.id)!),
            conversationId,
            parentId: mapped(message.parentId),
            threadId: null,
            role: message.role,
            content: message.content,
            // Nothing is writing an imported answer any more.
            status: message.status === "streaming" ? "incomplete" : message.status,
            modelId: null,
            modelName: message.modelName,
            promptTokens: message.promptTokens,
            completionTokens: message.completionTokens,
            toolCalls: message.toolCalls,
            metadata: message.metadata,
            editedFromId: mapped(message.editedFromId),
            deletedAt: message.deleted ? Option.some(now) : Option.none(),
            createdAt: Model.Override(message.createdAt),
            updatedAt: Model.Override(now)
          })
        )
        return { conversationId, conversation, rows, document, mapped, now }
      })

    /** Writes a prepared import (in the caller's transaction): the conversation, its tree, its threads. */
    const writeImport = (
      actor: Actor,
      { conversation, conversationId, document, mapped, now, rows }: Effect.Effect.Success<
        ReturnType<typeof prepareImport>
      >,
      from?: ImportSource,
      breathe: Effect.Effect<void> = Effect.void
    ) =>
      Effect.gen(function*() {
        yield* repo.insertConversation(conversation)
        yield* repo.insertTree(conversationId, rows, breathe)
        for (const exported of document.threads) {
          const threadId = yield* freshId<ThreadId>()
          const thread = Thread.insert.make({
            id: threadId,
            conversationId,
            anchorMessageId: mapped(exported.anchorMessageId)!,
            userId: actor.userId,
            title: exported.title,
            createdAt: Model.Override(exported.createdAt),
            updatedAt: Model.Override(now)
          })
          yield* repo.insertThread(thread)
          const threadMessages = []
          for (const message of exported.messages) {
            threadMessages.push(Message.insert.make({
              ...newMessage(yield* freshId<MessageId>(), {
                conversationId,
                parentId: null,
                threadId,
                role: message.role,
                content: message.content,
                metadata: message.metadata
              }),
              status: message.status === "streaming" ? "incomplete" : message.status,
              modelName: message.modelName,
              createdAt: Model.Override(message.createdAt),
              updatedAt: Model.Override(now)
            }))
          }
          yield* repo.insertMessages(threadMessages)
        }
        const liveCount = rows.filter((row) => Option.isNone(row.deletedAt)).length
        const leaf = document.conversation.currentLeafId === null
          ? Option.getOrNull(yield* repo.newestLeafBelow(conversationId, Option.none()))
          : mapped(document.conversation.currentLeafId)
        yield* repo.recordTreeChange(conversationId, leaf, liveCount)
        yield* audit.record({
          action: "conversation.imported",
          actor,
          target: { type: "conversation", id: conversationId },
          metadata: { messages: rows.length, threads: document.threads.length, ...(from ? { from } : {}) }
        })
      })

    const importConversation = (document: ConversationExport) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const prepared = yield* prepareImport(actor, document)
        yield* transaction(writeImport(actor, prepared))
        return yield* viewOf(actor, prepared.conversationId)
      }).pipe(Effect.withSpan("Conversations.importConversation"))

    /**
     * Imports the conversations of another product's file: each translated into a document, every one
     * checked before anything is written, then all written in one transaction (all or none).
     */
    const importTranslated = (
      from: ImportSource,
      translate: (now: DateTime.Utc) => Either.Either<ReadonlyArray<TranslatedConversation>, ValidationError>
    ) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const translated = yield* translate(yield* DateTime.now)
        const checking = yield* letLoopRun
        const prepared = yield* Effect.forEach(
          translated,
          ({ document, origin }) => Effect.zipLeft(Effect.either(prepareImport(actor, document, origin)), checking)
        )
        const refused = prepared.flatMap((result) => (Either.isLeft(result) ? result.left.issues : []))
        if (refused.length > 0) {
          return yield* new ValidationError({
            message: "The file is not an export this server can import",
            issues: refused
          })
        }
        const ready = prepared.flatMap((result) => (Either.isRight(result) ? [result.right] : []))
        // Other requests' queries wait for the transaction, but the rest of the server (answers being
        // streamed) goes on: the loop is let run between conversations (see `letLoopRun`).
        const breathe = yield* letLoopRun
        yield* transaction(
          Effect.forEach(ready, (one) => Effect.zipRight(writeImport(actor, one, from, breathe), breathe), {
            discard: true
          })
        )
        const conversations = ready.map((one, index) =>
          new ImportedConversation({
            id: one.conversationId,
            sourceId: translated[index]!.sourceId,
            title: one.document.conversation.title,
            messageCount: one.rows.length,
            skippedCount: translated[index]!.skippedCount
          }, true)
        )
        return new ImportSummary({
          conversations,
          messageCount: conversations.reduce((sum, one) => sum + one.messageCount, 0),
          skippedCount: conversations.reduce((sum, one) => sum + one.skippedCount, 0)
        }, true)
      })

    const importOpenWebUi = (chats: ReadonlyArray<OpenWebUiChat>) =>
      importTranslated("open-webui", (now) => fromOpenWebUi(chats, now)).pipe(
        Effect.withSpan("Conversations.importOpenWebUi")
      )

    const importChatGpt = (conversations: ReadonlyArray<ChatGptConversation>) =>
      importTranslated("chatgpt", (now) => fromChatGpt(conversations, now)).pipe(
        Effect.withSpan("Conversations.importChatGpt")
      )

    return {
      create,
      list,
      get,
      update,
      trash,
      restore,
      purge,
      listMessages,
      openAnswer,
      openThreadAnswer,
      readBack,
      getMessage,
      appendMessage,
      editMessage,
      deleteMessage,
      setCurrentLeaf,
      createThread,
      listThreads,
      updateThread,
      deleteThread,
      listThreadMessages,
      appendThreadMessage,
      search,
      exportJson,
      exportMarkdown,
      importConversation,
      importOpenWebUi,
      importChatGpt
    } as const
  })
}) {}

/**
 * Erases what the trash and deletions keep once `retention` has passed: conversations in the trash
 * since before then are deleted for good, with what the knowledge graph took from them (each
 * recorded in the audit trail as the system's doing),
 * and messages deleted before then lose what they said (their place in the tree stays).
 */
export const sweepTrash = (retention: Duration.Duration) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* ConversationRepo
    const graph = yield* GraphRepo
    const audit = yield* AuditLog
    const cutoff = DateTime.formatIso(DateTime.subtractDuration(yield* DateTime.now, retention))
    const purged = yield* inTransaction(sql)(Effect.gen(function*() {
      const rows = yield* repo.purgeTrashedBefore(cutoff)
      for (const row of rows) {
        yield* graph.forgetSource(row.userId, "conversation", row.id)
        yield* audit.record({
          action: "conversation.purged",
          actor: { type: "system", id: null },
          target: { type: "conversation", id: row.id },
          metadata: { reason: "trash-retention" },
          withoutClient: true
        })
      }
      return rows.length
    }))
    const erased = yield* repo.eraseDeletedBefore(cutoff)
    return { purged, erased }
  })

/** Runs `sweepTrash` hourly (on every instance: it is idempotent), with `TRASH_RETENTION`. */
export const TrashSweepLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const { trashRetention } = yield* AppConfig
    yield* everyHour(sweepTrash(trashRetention), {
      done: "Trash emptied",
      failed: "The trash could not be emptied",
      counts: ({ erased, purged }) => ({ purged, erased })
    })
  })
)

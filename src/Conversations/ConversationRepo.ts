/**
 * The SQL of the conversation history: conversations, the message tree and
 * threads. Every query that reaches a conversation names its owner, so
 * another user's objects are simply not found.
 *
 * The active branch is read with one recursive query that walks from the
 * current leaf up through `parent_id` (a primary-key lookup per step), and
 * each message's position among its siblings comes from the
 * `messages_children_idx` / `messages_roots_idx` indexes.
 */
import { SqlClient, SqlSchema } from "@effect/sql"
import { Array, DateTime, Effect, Option, Schema } from "effect"
import {
  Conversation,
  Message,
  MessageRole,
  MessageStatus,
  MessageView,
  Thread,
  ToolCall
} from "../Domain/Conversation.js"
import { NonNegativeInt } from "../Domain/Fields.js"
import type { ConversationId, FileId, LlmModelId, MessageId, ThreadId, UserId } from "../Domain/Ids.js"
import { dialectOf, storedNow } from "../Sql.js"

/** A conversation with what its list item shows: the message count and the current leaf's preview. */
export const ConversationSummaryRow = Schema.Struct({
  ...Conversation.fields,
  lastRole: Schema.NullOr(MessageRole),
  lastStatus: Schema.NullOr(MessageStatus),
  lastPreview: Schema.NullOr(Schema.String),
  lastCreatedAt: Schema.NullOr(Schema.DateTimeUtc)
})
export type ConversationSummaryRow = typeof ConversationSummaryRow.Type

/** A message row as the database hands it over (column names as they are), on both dialects (see `Sql.ts`). */
export interface StoredMessageRow {
  readonly id: string
  readonly conversation_id: string
  readonly parent_id: string | null
  readonly thread_id: string | null
  readonly role: string
  readonly content: string
  readonly status: string
  readonly model_id: string | null
  readonly model_name: string | null
  readonly prompt_tokens: number | null
  readonly completion_tokens: number | null
  readonly tool_calls: string
  readonly metadata: string
  readonly edited_from_id: string | null
  readonly deleted_at: string | null
  readonly created_at: string
  readonly updated_at: string
  readonly sibling_index: number | string
  readonly sibling_count: number | string
}

/** The columns of a `StoredMessageRow`, as a statement selects (or returns) them for `readMessage`. */
export const storedMessageColumns = [
  "id",
  "conversation_id",
  "parent_id",
  "thread_id",
  "role",
  "content",
  "status",
  "model_id",
  "model_name",
  "prompt_tokens",
  "completion_tokens",
  "tool_calls",
  "metadata",
  "edited_from_id",
  "deleted_at",
  "created_at",
  "updated_at",
  "sibling_index",
  "sibling_count"
] as const satisfies ReadonlyArray<keyof StoredMessageRow>

/**
 * Reads a stored message row as the API shows it, without a schema pass. Long lists (a branch of a thousand
 * messages, a page of the tree) spend most of their time decoding rows field by field
 * (about 10 µs a row); these rows are the server's own, written through the `Message`
 * schema and held to it by the database's constraints. They are read without the client's
 * name transforms too (another pass over every field). The tests check that this reader and
 * the `Message` schema agree.
 */
export const readMessage = (row: StoredMessageRow): MessageView =>
  trusted(MessageView, {
    id: row.id as MessageId,
    conversationId: row.conversation_id as ConversationId,
    parentId: row.parent_id as MessageId | null,
    threadId: row.thread_id as ThreadId | null,
    role: row.role as MessageRole,
    content: row.content,
    status: row.status as MessageStatus,
    modelId: row.model_id as LlmModelId | null,
    modelName: row.model_name,
    promptTokens: row.prompt_tokens,
    completionTokens: row.completion_tokens,
    toolCalls: row.tool_calls === "[]"
      ? []
      : (JSON.parse(row.tool_calls) as Array<ToolCall>).map((call) => trusted(ToolCall, call)),
    metadata: row.metadata === "{}" ? {} : JSON.parse(row.metadata),
    editedFromId: row.edited_from_id as MessageId | null,
    siblingIndex: Number(row.sibling_index),
    // A thread message, or one read while its branch is being deleted, still counts itself.
    siblingCount: Math.max(Number(row.sibling_count), 1),
    createdAt: DateTime.unsafeMake(row.created_at),
    updatedAt: DateTime.unsafeMake(row.updated_at)
  })

/**
 * An instance of a schema class from fields already known to be valid, without its
 * constructor: even with validation off, the constructor copies the fields and merges
 * defaults (about 5 µs an object, most of the cost of reading a 1,000-message branch).
 * The result is what the constructor builds: the fields on an object of the class.
 */
const trusted = <A extends object>(
  Class: { readonly prototype: A },
  fields: { readonly [K in keyof A]: A[K] }
): A => Object.assign(Object.create(Class.prototype) as A, fields)

const readMessages = (rows: ReadonlyArray<StoredMessageRow>) => rows.map(readMessage)

export const ThreadRow = Schema.Struct({ ...Thread.fields, messageCount: NonNegativeInt })
export type ThreadRow = typeof ThreadRow.Type

/** Which conversations a list shows. */
export type ListState = "active" | "archived" | "trash"

/** Where a conversation list page starts: after the last item's sort key. */
export interface ConversationPosition {
  readonly pinned: boolean
  readonly at: string
  readonly id: string
}

/** Where a page of messages (tree view, thread) starts: after the last item's time and id. */
export interface MessagePosition {
  readonly at: string
  readonly id: string
}

export const previewLength = 200

export class ConversationRepo extends Effect.Service<ConversationRepo>()("Conversations/ConversationRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    /** The same client without the name transforms, for the rows `readMessage` reads. */
    const raw = sql.withoutTransforms()
    const lockRow = sql.literal(dialectOf(sql) === "pg" ? "FOR UPDATE" : "")
    const now = storedNow
    const flag = (value: boolean) => (value ? 1 : 0)

    const summaryColumns = sql`
      c.id, c.user_id, c.title, c.model_id, c.model_config_id, c.current_leaf_id, c.pinned, c.archived,
      c.deleted_at, c.message_count, c.created_at, c.updated_at,
      leaf.role AS last_role, leaf.status AS last_status,
      substr(leaf.content, 1, ${previewLength}) AS last_preview, leaf.created_at AS last_created_at`

    const findSummary = SqlSchema.findOne({
      Request: Schema.Struct({ userId: Schema.String, id: Schema.String }),
      Result: ConversationSummaryRow,
      execute: ({ id, userId }) =>
        sql`SELECT ${summaryColumns}
          FROM conversations c LEFT JOIN messages leaf ON leaf.id = c.current_leaf_id
          WHERE c.id = ${id} AND c.user_id = ${userId}`
    })

    const listSummaries = (
      userId: UserId,
      state: ListState,
      after: Option.Option<ConversationPosition>,
      limit: number
    ) => {
      if (state === "trash") {
        const keyset = Option.match(after, {
          onNone: () => sql`TRUE`,
          onSome: ({ at, id }) => sql`(c.deleted_at < ${at} OR (c.deleted_at = ${at} AND c.id < ${id}))`
        })
        return sql`SELECT ${summaryColumns}
          FROM conversations c LEFT JOIN messages leaf ON leaf.id = c.current_leaf_id
          WHERE c.user_id = ${userId} AND c.deleted_at IS NOT NULL AND ${keyset}
          ORDER BY c.deleted_at DESC, c.id DESC LIMIT ${limit}`
      }
      // Pinned first, then newest-updated: the order of `conversations_user_list_idx`, read backwards.
      const keyset = Option.match(after, {
        onNone: () => sql`TRUE`,
        onSome: ({ at, id, pinned }) => sql`(c.pinned, c.updated_at, c.id) < (${flag(pinned)}, ${at}, ${id})`
      })
      return sql`SELECT ${summaryColumns}
        FROM conversations c LEFT JOIN messages leaf ON leaf.id = c.current_leaf_id
        WHERE c.user_id = ${userId} AND c.deleted_at IS NULL AND c.archived = ${flag(state === "archived")}
          AND ${keyset}
        ORDER BY c.pinned DESC, c.updated_at DESC, c.id DESC LIMIT ${limit}`
    }

    /**
     * The owner's conversation, locked against concurrent changes of its tree until the
     * transaction ends (PostgreSQL row lock; SQLite runs one write transaction at a time).
     */
    const lockConversation = SqlSchema.findOne({
      Request: Schema.Struct({ userId: Schema.String, id: Schema.String }),
      Result: Conversation,
      execute: ({ id, userId }) => sql`SELECT * FROM conversations WHERE id = ${id} AND user_id = ${userId} ${lockRow}`
    })

    /**
     * Renumbers the live children of `parentIds` (`null`: the conversation's roots) in sibling
     * order, after one was added or deleted; the positions are kept on the rows (see migration 0004).
     */
    const renumber = (conversationId: ConversationId, parentIds: ReadonlyArray<MessageId | null> | "all") =>
      Effect.gen(function*() {
        const earlier =
          sql`(s.created_at < messages.created_at OR (s.created_at = messages.created_at AND s.id < messages.id))`
        const roots = sql`s.conversation_id = messages.conversation_id AND s.parent_id IS NULL AND s.thread_id IS NULL`
        const parents = parentIds === "all" ? [] : parentIds.filter((id): id is MessageId => id !== null)
        if (parentIds === "all" || parents.length > 0) {
          const which = parentIds === "all"
            ? sql`conversation_id = ${conversationId} AND parent_id IS NOT NULL`
            : sql`parent_id IN ${sql.in(parents)}`
          yield* sql`UPDATE messages SET
            sibling_index = (
              SELECT count(*) FROM messages s
              WHERE s.parent_id = messages.parent_id AND s.deleted_at IS NULL AND ${earlier}
            ),
            sibling_count = (SELECT count(*) FROM messages s WHERE s.parent_id = messages.parent_id AND s.deleted_at IS NULL)
            WHERE ${which} AND deleted_at IS NULL`
        }
        if (parentIds === "all" || parentIds.includes(null)) {
          yield* sql`UPDATE messages SET
            sibling_index = (SELECT count(*) FROM messages s WHERE ${roots} AND s.deleted_at IS NULL AND ${earlier}),
            sibling_count = (SELECT count(*) FROM messages s WHERE ${roots} AND s.deleted_at IS NULL)
            WHERE conversation_id = ${conversationId} AND parent_id IS NULL AND thread_id IS NULL
              AND deleted_at IS NULL`
        }
      })

    /** Rows of `alias` after `after` in (created_at, id) order: where an oldest-first page continues. */
    const createdAfter = (alias: string, after: Option.Option<MessagePosition>) =>
      Option.match(after, {
        onNone: () => sql`TRUE`,
        onSome: ({ at, id }) => {
          const createdAt = sql.literal(`${alias}.created_at`)
          return sql`(${createdAt} > ${at} OR (${createdAt} = ${at} AND ${sql.literal(`${alias}.id`)} > ${id}))`
        }
      })

    const messageColumns = sql.literal(storedMessageColumns.map((column) => `m.${column}`).join(", "))

    /**
     * The branch that ends at `leafId`, root first. CROSS JOIN fixes the join order on SQLite
     * (look each branch row up by key, rather than scan the messages against the branch).
     */
    const activeBranch = (conversationId: ConversationId, leafId: MessageId, limit: number | undefined) =>
      raw<StoredMessageRow>`
        WITH RECURSIVE branch (id, parent_id, depth) AS (
          SELECT id, parent_id, 0 FROM messages WHERE id = ${leafId} AND conversation_id = ${conversationId}
          UNION ALL
          SELECT m.id, m.parent_id, branch.depth + 1 FROM messages m JOIN branch ON m.id = branch.parent_id
          ${limit === undefined ? sql.literal("") : sql`WHERE branch.depth < ${limit}`}
        )
        SELECT ${messageColumns} FROM branch CROSS JOIN messages m WHERE m.id = branch.id
        ORDER BY branch.depth DESC`

    /** Every live message of the tree (threads aside), oldest first, a page at a time. */
    const treePage = (conversationId: ConversationId, after: Option.Option<MessagePosition>, limit: number) =>
      raw<StoredMessageRow>`SELECT ${messageColumns} FROM messages m
        WHERE m.conversation_id = ${conversationId} AND m.thread_id IS NULL AND m.deleted_at IS NULL
          AND ${createdAfter("m", after)}
        ORDER BY m.created_at, m.id LIMIT ${limit}`

    const findMessage = (conversationId: ConversationId, id: MessageId) =>
      raw<StoredMessageRow>`SELECT ${messageColumns} FROM messages m
        WHERE m.id = ${id} AND m.conversation_id = ${conversationId} AND m.deleted_at IS NULL`.pipe(
        Effect.map((rows) => Option.map(Array.head(rows), readMessage))
      )

    /**
     * The end of the newest live branch below `start` (following the newest child at each
     * step), or below the conversation's newest root when `start` is none.
     */
    const newestLeafBelow = (conversationId: ConversationId, start: Option.Option<MessageId>) =>
      Effect.map(
        sql<{ id: MessageId }>`
          WITH RECURSIVE walk (id, depth) AS (
            ${
          Option.match(start, {
            onSome: (id) => sql`SELECT id, 0 FROM messages WHERE id = ${id} AND deleted_at IS NULL`,
            onNone: () =>
              sql`SELECT id, 0 FROM (
                SELECT id FROM messages
                WHERE conversation_id = ${conversationId} AND parent_id IS NULL AND thread_id IS NULL
                  AND deleted_at IS NULL
                ORDER BY created_at DESC, id DESC LIMIT 1
              ) newest_root`
          })
        }
            UNION ALL
            SELECT (
              SELECT c.id FROM messages c WHERE c.parent_id = walk.id AND c.deleted_at IS NULL
              ORDER BY c.created_at DESC, c.id DESC LIMIT 1
            ), walk.depth + 1 FROM walk WHERE walk.id IS NOT NULL
          )
          SELECT id FROM walk WHERE id IS NOT NULL ORDER BY depth DESC LIMIT 1`,
        (rows) => Option.fromNullable(rows[0]?.id)
      )

    /** Soft-deletes a live message and every live message below it; returns the ids deleted. */
    const deleteSubtree = (id: MessageId) =>
      Effect.flatMap(now, (at) =>
        Effect.map(
          sql<{ id: MessageId }>`
            WITH RECURSIVE subtree (id) AS (
              SELECT id FROM messages WHERE id = ${id} AND deleted_at IS NULL
              UNION ALL
              SELECT m.id FROM messages m JOIN subtree ON m.parent_id = subtree.id WHERE m.deleted_at IS NULL
            )
            UPDATE messages SET deleted_at = ${at}, updated_at = ${at}
            WHERE id IN (SELECT id FROM subtree)
            RETURNING id`,
          (rows) => rows.map((row) => row.id)
        ))

    const threadColumns = sql`
      t.id, t.conversation_id, t.anchor_message_id, t.user_id, t.title, t.created_at, t.updated_at,
      (SELECT count(*) FROM messages tm WHERE tm.thread_id = t.id AND tm.deleted_at IS NULL) AS message_count`

    const findThread = SqlSchema.findOne({
      Request: Schema.Struct({ conversationId: Schema.String, id: Schema.String }),
      Result: ThreadRow,
      execute: ({ conversationId, id }) =>
        sql`SELECT ${threadColumns} FROM threads t WHERE t.id = ${id} AND t.conversation_id = ${conversationId}`
    })

    const threadsPage = (conversationId: ConversationId, after: Option.Option<MessagePosition>, limit: number) =>
      sql`SELECT ${threadColumns} FROM threads t
        WHERE t.conversation_id = ${conversationId} AND ${createdAfter("t", after)}
        ORDER BY t.created_at, t.id LIMIT ${limit}`

    const threadMessagesPage = (threadId: ThreadId, after: Option.Option<MessagePosition>, limit: number) =>
      raw<StoredMessageRow>`SELECT ${messageColumns} FROM messages m
        WHERE m.thread_id = ${threadId} AND m.deleted_at IS NULL AND ${createdAfter("m", after)}
        ORDER BY m.created_at, m.id LIMIT ${limit}`

    const decodeThreads = Schema.decodeUnknown(Schema.Array(ThreadRow))
    const decodeSummaries = Schema.decodeUnknown(Schema.Array(ConversationSummaryRow))

    /** Every message of a conversation as stored (deleted ones included), oldest first: for export. */
    const allMessages = SqlSchema.findAll({
      Request: Schema.String,
      Result: Message,
      execute: (conversationId) =>
        sql`SELECT * FROM messages WHERE conversation_id = ${conversationId} ORDER BY created_at, id`
    })

    const allThreads = SqlSchema.findAll({
      Request: Schema.String,
      Result: Thread,
      execute: (conversationId) =>
        sql`SELECT * FROM threads WHERE conversation_id = ${conversationId} ORDER BY created_at, id`
    })

    const insertConversation = SqlSchema.void({
      Request: Conversation.insert,
      execute: (row) => sql`INSERT INTO conversations ${sql.insert(row)}`
    })

    const insertMessages = SqlSchema.void({
      Request: Schema.Array(Message.insert),
      execute: (rows) => sql`INSERT INTO messages ${sql.insert(rows)}`
    })

    const insertThread = SqlSchema.void({
      Request: Thread.insert,
      execute: (row) => sql`INSERT INTO threads ${sql.insert(row)}`
    })

    /** Records the files a question carries. */
    const attachFiles = (messageId: MessageId, fileIds: ReadonlyArray<FileId>) =>
      Effect.flatMap(
        now,
        (at) =>
          sql`INSERT INTO message_files ${sql.insert(fileIds.map((fileId) => ({ messageId, fileId, createdAt: at })))}`
      )

    /** Records for `toId` the files `fromId` carries (an edited question keeps its attachments). */
    const copyAttachments = (fromId: MessageId, toId: MessageId) =>
      Effect.flatMap(
        now,
        (at) =>
          sql`INSERT INTO message_files (message_id, file_id, created_at)
            SELECT ${toId}, file_id, ${at} FROM message_files WHERE message_id = ${fromId}`
      )

    /** Deletes for good the conversations in the trash since before `cutoff` (an ISO time). */
    const purgeTrashedBefore = (cutoff: string) =>
      sql<{ readonly id: ConversationId; readonly userId: UserId }>`
        DELETE FROM conversations WHERE deleted_at IS NOT NULL AND deleted_at < ${cutoff}
        RETURNING id, user_id`

    /**
     * Erases what the messages deleted before `cutoff` said (text, tool calls, metadata, attached
     * files, and the comments of their ratings, which may quote them; a rating's up or down and its
     * reasons stay): their place in the tree stays, so the branches around them keep their shape.
     */
    const eraseDeletedBefore = (cutoff: string) =>
      Effect.gen(function*() {
        yield* sql`DELETE FROM message_files WHERE message_id IN (
          SELECT id FROM messages WHERE deleted_at IS NOT NULL AND deleted_at < ${cutoff})`
        yield* sql`UPDATE message_feedback SET comment = NULL WHERE comment IS NOT NULL AND message_id IN (
          SELECT id FROM messages WHERE deleted_at IS NOT NULL AND deleted_at < ${cutoff})`
        const erased = yield* sql<{ readonly id: MessageId }>`
          UPDATE messages SET content = '', tool_calls = '[]', metadata = '{}'
          WHERE deleted_at IS NOT NULL AND deleted_at < ${cutoff}
            AND (content <> '' OR tool_calls <> '[]' OR metadata <> '{}')
          RETURNING id`
        return erased.length
      })

    /** The user's conversation if it is out of the trash. */
    const findLive = (userId: UserId, id: ConversationId) =>
      Effect.map(
        Effect.orDie(findSummary({ userId, id })),
        Option.filter((conversation) => Option.isNone(conversation.deletedAt))
      )

    /** The user's conversation out of the trash, and its active branch, root first. */
    const liveBranch = (userId: UserId, id: ConversationId) =>
      Effect.flatMap(findLive(userId, id), (found) =>
        Option.match(found, {
          onNone: () => Effect.succeedNone,
          onSome: (conversation) =>
            conversation.currentLeafId === null
              ? Effect.succeedSome({ conversation, branch: [] })
              : Effect.map(
                Effect.orDie(activeBranch(id, conversation.currentLeafId, undefined)),
                (rows) => Option.some({ conversation, branch: readMessages(rows) })
              )
        }))

    return {
      findLive,
      liveBranch,
      attachFiles: (messageId: MessageId, fileIds: ReadonlyArray<FileId>) =>
        Effect.orDie(attachFiles(messageId, fileIds)),
      copyAttachments: (fromId: MessageId, toId: MessageId) => Effect.orDie(copyAttachments(fromId, toId)),
      purgeTrashedBefore: (cutoff: string) => purgeTrashedBefore(cutoff),
      eraseDeletedBefore: (cutoff: string) => eraseDeletedBefore(cutoff),
      findSummary: (userId: UserId, id: ConversationId) => Effect.orDie(findSummary({ userId, id })),
      listSummaries: (userId: UserId, state: ListState, after: Option.Option<ConversationPosition>, limit: number) =>
        Effect.orDie(Effect.flatMap(listSummaries(userId, state, after, limit + 1), decodeSummaries)),
      lockConversation: (userId: UserId, id: ConversationId) => Effect.orDie(lockConversation({ userId, id })),
      insertConversation: (row: typeof Conversation.insert.Type) => Effect.orDie(insertConversation(row)),
      /** Changes a conversation's own fields, marking it updated unless `touch` is false. */
      updateConversation: (id: ConversationId, fields: Record<string, unknown>, touch = true) =>
        Effect.orDie(Effect.flatMap(
          now,
          (at) =>
            sql`UPDATE conversations SET ${sql.update(touch ? { ...fields, updatedAt: at } : fields)} WHERE id = ${id}`
        )),
      /** Records that the tree changed: its new leaf, how many messages were added (or removed), and when. */
      recordTreeChange: (id: ConversationId, leafId: MessageId | null, countDelta: number) =>
        Effect.orDie(Effect.flatMap(now, (at) =>
          sql`UPDATE conversations
            SET current_leaf_id = ${leafId}, message_count = message_count + ${countDelta}, updated_at = ${at}
            WHERE id = ${id}`)),
      touchConversation: (id: ConversationId) =>
        Effect.orDie(Effect.flatMap(now, (at) => sql`UPDATE conversations SET updated_at = ${at} WHERE id = ${id}`)),
      purgeConversation: (id: ConversationId) => Effect.orDie(sql`DELETE FROM conversations WHERE id = ${id}`),
      /**
       * The branch that ends at `leafId`, root first; with `limit`, only the `limit` messages
       * nearest the leaf, and the one above them if there is one (to continue from).
       */
      activeBranch: (conversationId: ConversationId, leafId: MessageId, limit?: number) =>
        Effect.orDie(Effect.map(activeBranch(conversationId, leafId, limit), readMessages)),
      treePage: (conversationId: ConversationId, after: Option.Option<MessagePosition>, limit: number) =>
        Effect.orDie(Effect.map(treePage(conversationId, after, limit + 1), readMessages)),
      /** A live message of the conversation (of its tree or of a thread). */
      findMessage: (conversationId: ConversationId, id: MessageId) => Effect.orDie(findMessage(conversationId, id)),
      /** Inserts messages (of one conversation), and renumbers the siblings they joined. */
      insertMessages: (rows: ReadonlyArray<typeof Message.insert.Type>) =>
        rows.length === 0 ? Effect.void : Effect.orDie(Effect.zipRight(
          insertMessages(rows),
          Effect.suspend(() => {
            const parents = new Set(rows.filter((row) => row.threadId === null).map((row) => row.parentId))
            // A whole imported tree is renumbered at once rather than listing its parents.
            return parents.size === 0
              ? Effect.void
              : renumber(rows[0]!.conversationId, parents.size > 100 ? "all" : Array.fromIterable(parents))
          })
        )),
      /**
       * Inserts a whole tree of one conversation (an import), in batches, then renumbers it once;
       * `between` runs after each batch (an import lets the event loop run there).
       */
      insertTree: (
        conversationId: ConversationId,
        rows: ReadonlyArray<typeof Message.insert.Type>,
        between: Effect.Effect<void>
      ) =>
        rows.length === 0 ? Effect.void : Effect.orDie(Effect.zipRight(
          Effect.forEach(Array.chunksOf(rows, 500), (batch) => Effect.zipRight(insertMessages(batch), between), {
            discard: true
          }),
          renumber(conversationId, "all")
        )),
      newestLeafBelow: (conversationId: ConversationId, start: Option.Option<MessageId>) =>
        Effect.orDie(newestLeafBelow(conversationId, start)),
      /** Renumbers the sibling positions of a whole tree (after writing its rows directly). */
      renumberTree: (conversationId: ConversationId) => Effect.orDie(renumber(conversationId, "all")),
      /** Soft-deletes a live message and its subtree, renumbering its siblings; the ids deleted. */
      deleteSubtree: (
        message: {
          readonly id: MessageId
          readonly conversationId: ConversationId
          readonly parentId: MessageId | null
          readonly threadId: ThreadId | null
        }
      ) =>
        Effect.orDie(Effect.tap(
          deleteSubtree(message.id),
          () => message.threadId === null ? renumber(message.conversationId, [message.parentId]) : Effect.void
        )),
      /** Whether `ancestorId` is `messageId` or lies on the path from it up to its root. */
      isOnPathTo: (messageId: MessageId, ancestorId: MessageId) =>
        Effect.orDie(Effect.map(
          sql<{ found: number }>`
            WITH RECURSIVE up (id, parent_id) AS (
              SELECT id, parent_id FROM messages WHERE id = ${messageId}
              UNION ALL
              SELECT m.id, m.parent_id FROM messages m JOIN up ON m.id = up.parent_id
            )
            SELECT count(*) AS found FROM up WHERE id = ${ancestorId}`,
          (rows) => Number(rows[0]?.found ?? 0) > 0
        )),
      insertThread: (row: typeof Thread.insert.Type) => Effect.orDie(insertThread(row)),
      findThread: (conversationId: ConversationId, id: ThreadId) => Effect.orDie(findThread({ conversationId, id })),
      /** `rows` threads after `after`, oldest first. */
      threadsPage: (conversationId: ConversationId, after: Option.Option<MessagePosition>, rows: number) =>
        Effect.orDie(Effect.flatMap(threadsPage(conversationId, after, rows), decodeThreads)),
      /** `rows` messages of a thread after `after`, oldest first. */
      threadMessagesPage: (threadId: ThreadId, after: Option.Option<MessagePosition>, rows: number) =>
        Effect.orDie(Effect.map(threadMessagesPage(threadId, after, rows), readMessages)),
      /** Every message of a thread (not deleted), oldest first. */
      threadMessages: (threadId: ThreadId) =>
        Effect.orDie(Effect.map(
          raw<StoredMessageRow>`SELECT ${messageColumns} FROM messages m
            WHERE m.thread_id = ${threadId} AND m.deleted_at IS NULL ORDER BY m.created_at, m.id`,
          readMessages
        )),
      updateThread: (id: ThreadId, fields: Record<string, unknown>) =>
        Effect.orDie(Effect.flatMap(
          now,
          (at) => sql`UPDATE threads SET ${sql.update({ ...fields, updatedAt: at })} WHERE id = ${id}`
        )),
      deleteThread: (id: ThreadId) => Effect.orDie(sql`DELETE FROM threads WHERE id = ${id}`),
      allMessages: (conversationId: ConversationId) => Effect.orDie(allMessages(conversationId)),
      allThreads: (conversationId: ConversationId) => Effect.orDie(allThreads(conversationId))
    } as const
  })
}) {}

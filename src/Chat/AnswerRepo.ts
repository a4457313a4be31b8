/**
 * The writes of an answer while it is generated. An answer is a message row
 * in `streaming` status: its text is flushed as it grows (each write also
 * proves the generating instance alive), and it ends `complete`,
 * `cancelled`, `error` or `incomplete`. A cancel from any instance is a write
 * too: the generating instance sees it at its next flush.
 */
import { SqlClient } from "@effect/sql"
import { Array, Effect, Option } from "effect"
import { readMessage, storedMessageColumns, type StoredMessageRow } from "../Conversations/ConversationRepo.js"
import type { MessageView, ToolCall } from "../Domain/Conversation.js"
import type { JsonObject } from "../Domain/Fields.js"
import type { ConversationId, LlmModelId, MessageId, UserId } from "../Domain/Ids.js"
import { dialectOf, storedNow } from "../Sql.js"

export type FinalStatus = "complete" | "cancelled" | "error" | "incomplete"

/** An answer's text so far, to be flushed. */
export interface Draft {
  readonly id: MessageId
  readonly content: string
  readonly toolCalls: ReadonlyArray<ToolCall>
}

/**
 * Answers written per statement. SQLite runs a statement on the event loop: a bounded batch keeps
 * a flush of a thousand answers from holding every request up for its whole duration.
 */
const flushBatch = 50

export class AnswerRepo extends Effect.Service<AnswerRepo>()("Chat/AnswerRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    const pg = dialectOf(sql) === "pg"
    /** Without the name transforms, for the rows `readMessage` reads. */
    const raw = sql.withoutTransforms()
    const returnedColumns = sql.literal(storedMessageColumns.join(", "))

    /**
     * Writes the text so far of answers being generated, in one statement; gives the ids of those
     * still streaming (the others were cancelled elsewhere, or recovered as abandoned).
     */
    const flush = (drafts: ReadonlyArray<Draft>) =>
      Effect.gen(function*() {
        const still = new Set<string>()
        if (drafts.length === 0) return still
        const now = yield* storedNow
        for (let from = 0; from < drafts.length; from += flushBatch) {
          const rows = drafts.slice(from, from + flushBatch).map(({ content, id, toolCalls }) => {
            const calls = JSON.stringify(toolCalls)
            return pg ? sql`(${id}::uuid, ${content}, ${calls}::jsonb)` : sql`(${id}, ${content}, ${calls})`
          })
          const written = yield* sql<{ id: string }>`WITH draft (id, content, tool_calls) AS (VALUES ${sql.csv(rows)})
            UPDATE messages SET content = draft.content, tool_calls = draft.tool_calls, updated_at = ${now}
            FROM draft WHERE messages.id = draft.id AND messages.status = 'streaming' RETURNING messages.id`
          for (const row of written) still.add(row.id)
          yield* Effect.yieldNow()
        }
        return still
      }).pipe(Effect.withSpan("AnswerRepo.flush", { attributes: { answers: drafts.length } }))

    /**
     * Ends the answer with its final text, and runs `alongside` (another write of the end, like its
     * usage) in the same transaction. An answer cancelled elsewhere meanwhile stays `cancelled`;
     * one already ended (recovered as `incomplete` after a stall) is left alone. Gives the answer as
     * stored by this end; none when it was left alone (or is gone, or deleted).
     */
    const finish = <R>(
      conversationId: ConversationId,
      id: MessageId,
      fields: {
        readonly status: FinalStatus
        readonly content: string
        readonly toolCalls: ReadonlyArray<ToolCall>
        readonly promptTokens: number | null
        readonly completionTokens: number | null
        readonly error: JsonObject | null
      },
      alongside: Effect.Effect<void, never, R>
    ): Effect.Effect<Option.Option<MessageView>, never, R> =>
      Effect.flatMap(storedNow, (now) =>
        sql.withTransaction(Effect.gen(function*() {
          const metadata = fields.error === null ? sql`metadata` : sql`${JSON.stringify({ error: fields.error })}`
          const ended = yield* raw<StoredMessageRow>`UPDATE messages SET
            status = CASE WHEN status = 'cancelled' THEN 'cancelled' ELSE ${fields.status} END,
            content = ${fields.content}, tool_calls = ${JSON.stringify(fields.toolCalls)},
            prompt_tokens = ${fields.promptTokens}, completion_tokens = ${fields.completionTokens},
            metadata = ${metadata}, updated_at = ${now}
            WHERE id = ${id} AND status IN ('streaming', 'cancelled')
            RETURNING ${returnedColumns}`
          yield* sql`UPDATE conversations SET updated_at = ${now} WHERE id = ${conversationId}`
          yield* alongside
          return Option.map(Array.head(ended.filter((row) => row.deleted_at === null)), readMessage)
        }))).pipe(Effect.orDie)

    /** Marks a streaming answer cancelled; false if it was not streaming any more. */
    const cancel = (id: MessageId) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          sql<{ id: string }>`UPDATE messages SET status = 'cancelled', updated_at = ${now}
          WHERE id = ${id} AND status = 'streaming' RETURNING id`
      ).pipe(
        Effect.map((rows) => rows.length > 0),
        Effect.orDie
      )

    /** Answers left `streaming` with no write since `before` (their instance died) become `incomplete`. */
    const recoverAbandoned = (before: string) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          sql<{ id: string }>`UPDATE messages SET status = 'incomplete', updated_at = ${now}
          WHERE status = 'streaming' AND updated_at < ${before} RETURNING id`
      ).pipe(
        Effect.map((rows) => rows.length),
        Effect.orDie
      )

    /** Sets a conversation's title unless someone gave it one meanwhile; whether it did. */
    const setTitleIfEmpty = (conversationId: ConversationId, title: string) =>
      Effect.orDie(
        sql`UPDATE conversations SET title = ${title} WHERE id = ${conversationId} AND title = '' RETURNING id`
      ).pipe(Effect.map((rows) => rows.length > 0))

    /** What a title is written from: the answer's conversation (its owner and title), the question and the model. */
    const titleSource = (answerId: MessageId) =>
      Effect.orDie(
        sql<{
          readonly userId: UserId
          readonly title: string
          readonly question: string | null
          readonly modelId: LlmModelId | null
        }>`SELECT c.user_id, c.title, q.content AS question, a.model_id
           FROM messages a JOIN conversations c ON c.id = a.conversation_id
           LEFT JOIN messages q ON q.id = a.parent_id
           WHERE a.id = ${answerId}`
      ).pipe(Effect.map((rows) => Option.fromNullable(rows[0])))

    /**
     * Untitled conversations whose first answer ended from `since` on: those whose title job may
     * have been lost (the instance stopped between the answer's end and the job's queueing). The
     * first answer of each, oldest first.
     */
    const untitledSince = (since: string, limit: number) =>
      Effect.orDie(
        sql<{ readonly conversationId: ConversationId; readonly answerId: MessageId; readonly createdAt: string }>`
          SELECT c.id AS conversation_id, a.id AS answer_id, a.created_at
          FROM conversations c
          JOIN messages q ON q.conversation_id = c.id AND q.parent_id IS NULL AND q.thread_id IS NULL
          JOIN messages a ON a.parent_id = q.id AND a.role = 'assistant'
          WHERE c.title = '' AND c.deleted_at IS NULL AND a.status <> 'streaming' AND a.updated_at >= ${since}
          ORDER BY a.created_at, a.id
          LIMIT ${limit}`
      ).pipe(Effect.map((rows) => {
        const first = new Map<ConversationId, MessageId>()
        for (const row of rows) if (!first.has(row.conversationId)) first.set(row.conversationId, row.answerId)
        return [...first].map(([conversationId, answerId]) => ({ conversationId, answerId }))
      }))

    return { flush, finish, cancel, recoverAbandoned, setTitleIfEmpty, titleSource, untitledSince } as const
  })
}) {}

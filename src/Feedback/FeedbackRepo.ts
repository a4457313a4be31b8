/**
 * Feedback's SQL: a user's ratings are read and written by (message, user), so another user's are
 * never found; the administrators' report and list read everyone's, grouped and counted by the
 * database. A rating's reasons are rows of `message_feedback_reasons`, written with it.
 */
import { SqlClient } from "@effect/sql"
import { DateTime, Effect, Option, Schema } from "effect"
import { CountColumn } from "../Domain/Fields.js"
import {
  ConversationId,
  generateUuid,
  LlmModelId,
  type LlmModelId as LlmModelIdType,
  MessageId,
  UserId,
  UuidV7
} from "../Domain/Ids.js"
import type { Position } from "../Domain/Pagination.js"
import { Username } from "../Domain/User.js"
import { storedNow } from "../Sql.js"
import {
  FeedbackId,
  type FeedbackRating,
  FeedbackRating as Rating,
  type FeedbackReason,
  feedbackReasons
} from "./Api.js"

export const FeedbackRow = Schema.Struct({
  id: FeedbackId,
  conversationId: ConversationId,
  messageId: MessageId,
  userId: UserId,
  rating: Rating,
  comment: Schema.NullOr(Schema.String),
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc
})
/** A rating as stored, with its reasons (in the vocabulary's order). */
export type FeedbackRow = typeof FeedbackRow.Type & { readonly reasons: ReadonlyArray<FeedbackReason> }

const EntryRow = Schema.Struct({ ...FeedbackRow.fields, username: Username })
export type EntryRow = FeedbackRow & { readonly username: Username }

/** Which ratings the administrators' report and list read: given (or last replaced) in `[from, to)`. */
export interface FeedbackFilter {
  readonly from?: DateTime.Utc | undefined
  readonly to?: DateTime.Utc | undefined
  /** A model's id, or a model's name (deleted models' rows keep theirs). */
  readonly model?: string | undefined
  readonly rating?: FeedbackRating | undefined
}

const ModelCountsRow = Schema.Struct({
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  up: CountColumn,
  down: CountColumn
})
export type ModelCountsRow = typeof ModelCountsRow.Type

const ModelReasonRow = Schema.Struct({
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  reason: Schema.Literal(...feedbackReasons),
  count: CountColumn
})
export type ModelReasonRow = typeof ModelReasonRow.Type

const isUuid = Schema.is(UuidV7)
const reasonOrder = (reason: FeedbackReason) => feedbackReasons.indexOf(reason)

export class FeedbackRepo extends Effect.Service<FeedbackRepo>()("Feedback/FeedbackRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const decodeRows = Schema.decodeUnknown(Schema.Array(FeedbackRow))
    const decodeEntries = Schema.decodeUnknown(Schema.Array(EntryRow))

    /** Each rating's reasons, in the vocabulary's order. */
    const reasonsOf = (ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed(new Map<string, Array<FeedbackReason>>())
        : Effect.map(
          sql<{ readonly feedbackId: string; readonly reason: FeedbackReason }>`
            SELECT feedback_id, reason FROM message_feedback_reasons WHERE ${sql.in("feedback_id", ids)}`,
          (rows) => {
            const reasons = new Map<string, Array<FeedbackReason>>()
            for (const row of rows) reasons.set(row.feedbackId, [...(reasons.get(row.feedbackId) ?? []), row.reason])
            for (const list of reasons.values()) list.sort((a, b) => reasonOrder(a) - reasonOrder(b))
            return reasons
          }
        )

    const withReasons = <A extends { readonly id: string }>(rows: ReadonlyArray<A>) =>
      Effect.map(
        reasonsOf(rows.map((row) => row.id)),
        (reasons) => rows.map((row) => ({ ...row, reasons: reasons.get(row.id) ?? [] }))
      )

    /**
     * Creates the user's rating of a message, or replaces it (its rating, reasons, comment and model;
     * `updated_at` becomes now, `created_at` stays): one row per (message, user) whoever writes first.
     */
    const upsert = (input: {
      readonly messageId: MessageId
      readonly conversationId: ConversationId
      readonly userId: UserId
      readonly rating: FeedbackRating
      readonly reasons: ReadonlyArray<FeedbackReason>
      readonly comment: string | null
      readonly modelId: LlmModelIdType | null
      readonly modelName: string | null
    }) =>
      Effect.gen(function*() {
        const id = yield* generateUuid
        const now = yield* storedNow
        const { reasons, ...fields } = input
        const written = yield* sql<{ readonly id: string }>`
          INSERT INTO message_feedback ${sql.insert({ id, ...fields, createdAt: now, updatedAt: now })}
          ON CONFLICT (message_id, user_id) DO UPDATE SET
            rating = excluded.rating, comment = excluded.comment, model_id = excluded.model_id,
            model_name = excluded.model_name, updated_at = excluded.updated_at
          RETURNING id`
        const feedbackId = written[0]!.id
        yield* sql`DELETE FROM message_feedback_reasons WHERE feedback_id = ${feedbackId}`
        if (reasons.length > 0) {
          yield* sql`INSERT INTO message_feedback_reasons ${
            sql.insert(reasons.map((reason) => ({ feedbackId, reason })))
          }`
        }
        return feedbackId
      })

    const findOwn = (messageId: MessageId, userId: UserId) =>
      Effect.flatMap(
        sql`SELECT * FROM message_feedback WHERE message_id = ${messageId} AND user_id = ${userId}`,
        decodeRows
      ).pipe(
        Effect.flatMap(withReasons),
        Effect.map((rows): Option.Option<FeedbackRow> => Option.fromNullable(rows[0]))
      )

    /** Takes the user's rating of a message back; whether there was one. */
    const remove = (messageId: MessageId, userId: UserId) =>
      Effect.map(
        sql`DELETE FROM message_feedback WHERE message_id = ${messageId} AND user_id = ${userId} RETURNING id`,
        (rows) => rows.length > 0
      )

    /** The user's ratings of a conversation's live messages, oldest first. */
    const ofConversation = (conversationId: ConversationId, userId: UserId) =>
      Effect.flatMap(
        sql`SELECT f.* FROM message_feedback f JOIN messages m ON m.id = f.message_id
            WHERE f.conversation_id = ${conversationId} AND f.user_id = ${userId} AND m.deleted_at IS NULL
            ORDER BY f.created_at, f.id`,
        decodeRows
      ).pipe(Effect.flatMap((rows) => withReasons(rows)))

    // --- the administrators' side

    /** The ratings a filter selects (times as stored: ISO text, which PostgreSQL reads as timestamptz). */
    const selected = (filter: FeedbackFilter) =>
      [
        filter.from === undefined ? undefined : sql`f.updated_at >= ${DateTime.formatIso(filter.from)}`,
        filter.to === undefined ? undefined : sql`f.updated_at < ${DateTime.formatIso(filter.to)}`,
        filter.rating === undefined ? undefined : sql`f.rating = ${filter.rating}`,
        filter.model === undefined
          ? undefined
          // Compared as an id only when it is one: PostgreSQL refuses other text as a uuid.
          : isUuid(filter.model)
          ? sql`f.model_id = ${filter.model}`
          : sql`f.model_name = ${filter.model}`
      ].filter((condition) => condition !== undefined)

    const decodeCounts = Schema.decodeUnknown(Schema.Array(ModelCountsRow))
    const decodeReasonCounts = Schema.decodeUnknown(Schema.Array(ModelReasonRow))

    // A deleted model's ratings keep its name: they are grouped under it. Unnamed ones sort last on both dialects.
    const countsByModel = (filter: FeedbackFilter) =>
      Effect.flatMap(
        sql`SELECT f.model_id, f.model_name,
                   sum(CASE WHEN f.rating = 'up' THEN 1 ELSE 0 END) AS up,
                   sum(CASE WHEN f.rating = 'down' THEN 1 ELSE 0 END) AS down
            FROM message_feedback f WHERE ${sql.and(selected(filter))}
            GROUP BY f.model_id, f.model_name
            ORDER BY count(*) DESC, f.model_name IS NULL, f.model_name, f.model_id IS NULL, f.model_id`,
        decodeCounts
      )

    const reasonsByModel = (filter: FeedbackFilter) =>
      Effect.flatMap(
        sql`SELECT f.model_id, f.model_name, r.reason, count(*) AS count
            FROM message_feedback_reasons r JOIN message_feedback f ON f.id = r.feedback_id
            WHERE ${sql.and(selected(filter))}
            GROUP BY f.model_id, f.model_name, r.reason`,
        decodeReasonCounts
      )

    /** Everyone's ratings after `after` (by when given, then id), newest first, with their authors' names. */
    const page = (filter: FeedbackFilter, after: Option.Option<Position>, limit: number) => {
      const keyset = Option.match(after, {
        onNone: () => undefined,
        onSome: ({ at, id }) => sql`(f.updated_at < ${at} OR (f.updated_at = ${at} AND f.id < ${id}))`
      })
      const conditions = [...selected(filter), keyset].filter((condition) => condition !== undefined)
      return Effect.flatMap(
        sql`SELECT f.*, u.username FROM message_feedback f JOIN users u ON u.id = f.user_id
            WHERE ${sql.and(conditions)}
            ORDER BY f.updated_at DESC, f.id DESC LIMIT ${limit}`,
        decodeEntries
      ).pipe(Effect.flatMap((rows) => withReasons(rows)))
    }

    return {
      upsert: (input: Parameters<typeof upsert>[0]) => Effect.orDie(upsert(input)),
      findOwn: (messageId: MessageId, userId: UserId) => Effect.orDie(findOwn(messageId, userId)),
      remove: (messageId: MessageId, userId: UserId) => Effect.orDie(remove(messageId, userId)),
      ofConversation: (conversationId: ConversationId, userId: UserId) =>
        Effect.orDie(ofConversation(conversationId, userId)),
      /** Up and down per model (id and name), most ratings first. */
      countsByModel: (filter: FeedbackFilter): Effect.Effect<ReadonlyArray<ModelCountsRow>> =>
        Effect.orDie(countsByModel(filter)),
      /** How many ratings gave each reason, per model. */
      reasonsByModel: (filter: FeedbackFilter): Effect.Effect<ReadonlyArray<ModelReasonRow>> =>
        Effect.orDie(reasonsByModel(filter)),
      page: (filter: FeedbackFilter, after: Option.Option<Position>, limit: number) =>
        Effect.orDie(page(filter, after, limit))
    } as const
  })
}) {}

/**
 * Feedback on answers: a user rates the assistant messages of their own conversations (up or down,
 * reasons from a fixed vocabulary, a comment), one rating per answer that a new one replaces, and
 * reads their ratings of a conversation back beside its messages (not inside them: the message views
 * are on the chat's hot path). Administrators (`admin:users`, as for the usage report) compare models
 * by the ratings: counts per model, and the entries with their comments.
 *
 * Only an answer can be rated: another role is a 422, an answer still being written a 409 (its
 * content is not final yet). Another user's conversation, a deleted message, a conversation in the
 * trash: 404.
 */
import { SqlClient } from "@effect/sql"
import { DateTime, Effect, Option } from "effect"
import { requirePermission } from "./Auth/Policy.js"
import { ConversationRepo } from "./Conversations/ConversationRepo.js"
import type { Actor, CurrentActor } from "./Domain/Actor.js"
import type { MessageView } from "./Domain/Conversation.js"
import {
  checkRange,
  Conflict,
  type Forbidden,
  invalid,
  NotFound,
  orNotFound,
  type ValidationError
} from "./Domain/Errors.js"
import type { ConversationId, MessageId } from "./Domain/Ids.js"
import { decodeCursor, defaultLimit, encodeCursor, toPage } from "./Domain/Pagination.js"
import {
  type FeedbackCounts,
  FeedbackEntry,
  type FeedbackListQuery,
  type FeedbackPayload,
  type FeedbackReason,
  feedbackReasons,
  FeedbackSummary,
  type FeedbackSummaryQuery,
  FeedbackView,
  type ModelFeedback
} from "./Feedback/Api.js"
import { type EntryRow, FeedbackRepo, type FeedbackRow } from "./Feedback/FeedbackRepo.js"
import { inTransaction } from "./Sql.js"

const toView = (row: FeedbackRow) =>
  new FeedbackView({
    id: row.id,
    conversationId: row.conversationId,
    messageId: row.messageId,
    rating: row.rating,
    reasons: row.reasons,
    comment: row.comment,
    modelId: row.modelId,
    modelName: row.modelName,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt
  }, true)

const toEntry = (row: EntryRow) =>
  new FeedbackEntry({ ...toView(row), userId: row.userId, username: row.username }, true)

/** Every reason of the vocabulary, at 0. */
const noReasons = (): Record<FeedbackReason, number> =>
  Object.fromEntries(feedbackReasons.map((reason) => [reason, 0])) as Record<FeedbackReason, number>

const counted = (up: number, down: number, reasons: Record<FeedbackReason, number>): FeedbackCounts => ({
  up,
  down,
  total: up + down,
  upShare: up + down === 0 ? null : up / (up + down),
  reasons
})

/** Which model a group of rows is: its id and name together (a deleted model's rows keep the name only). */
const modelKey = (row: { readonly modelId: string | null; readonly modelName: string | null }) =>
  JSON.stringify([row.modelId, row.modelName])

export class Feedback extends Effect.Service<Feedback>()("Feedback", {
  effect: Effect.gen(function*() {
    const repo = yield* FeedbackRepo
    const conversations = yield* ConversationRepo
    const transaction = inTransaction(yield* SqlClient.SqlClient)

    const readable = requirePermission("conversations:read")
    const writable = requirePermission("conversations:write")
    const administering = requirePermission("admin:users")

    /**
     * A live message of the actor's conversation, out of the trash; the conversation is locked until the
     * transaction ends, so it is not purged between the check and the write.
     */
    const liveMessage = (actor: Actor, id: ConversationId, messageId: MessageId) =>
      Effect.gen(function*() {
        yield* conversations.lockConversation(actor.userId, id).pipe(
          Effect.map(Option.filter((conversation) => Option.isNone(conversation.deletedAt))),
          orNotFound("No such conversation")
        )
        return yield* conversations.findMessage(id, messageId).pipe(orNotFound("No such message"))
      })

    const rateable = (message: MessageView): Effect.Effect<void, ValidationError | Conflict> =>
      message.role !== "assistant"
        ? Effect.fail(invalid(["messageId"], "Only an answer (an assistant message) can be rated"))
        : message.status === "streaming"
        ? Effect.fail(new Conflict({ message: "The answer is still being written: rate it once it has ended" }))
        : Effect.void

    /** Rates an answer of the caller's, or replaces their rating of it. */
    const set = (
      id: ConversationId,
      messageId: MessageId,
      payload: FeedbackPayload
    ): Effect.Effect<FeedbackView, Forbidden | NotFound | ValidationError | Conflict, CurrentActor> =>
      Effect.gen(function*() {
        const actor = yield* writable
        const row = yield* transaction(Effect.gen(function*() {
          const message = yield* liveMessage(actor, id, messageId)
          yield* rateable(message)
          const given = new Set(payload.reasons ?? [])
          yield* repo.upsert({
            messageId,
            conversationId: id,
            userId: actor.userId,
            rating: payload.rating,
            reasons: feedbackReasons.filter((reason) => given.has(reason)),
            comment: payload.comment === undefined || payload.comment === null || payload.comment === ""
              ? null
              : payload.comment,
            modelId: message.modelId,
            modelName: message.modelName
          })
          return yield* Effect.flatten(repo.findOwn(messageId, actor.userId)).pipe(Effect.orDie)
        }))
        return toView(row)
      }).pipe(Effect.withSpan("Feedback.set"))

    /** Takes the caller's rating of an answer back; 404 when there is none. */
    const remove = (
      id: ConversationId,
      messageId: MessageId
    ): Effect.Effect<void, Forbidden | NotFound, CurrentActor> =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* transaction(Effect.gen(function*() {
          yield* liveMessage(actor, id, messageId)
          if (!(yield* repo.remove(messageId, actor.userId))) {
            return yield* new NotFound({ message: "You have not rated this answer" })
          }
        }))
      }).pipe(Effect.withSpan("Feedback.remove"))

    /** The caller's ratings of a conversation of theirs (in the trash too), for its messages not deleted. */
    const ofConversation = (
      id: ConversationId
    ): Effect.Effect<
      { readonly items: ReadonlyArray<FeedbackView>; readonly nextCursor: null },
      Forbidden | NotFound,
      CurrentActor
    > =>
      Effect.gen(function*() {
        const actor = yield* readable
        yield* conversations.findSummary(actor.userId, id).pipe(orNotFound("No such conversation"))
        const rows = yield* repo.ofConversation(id, actor.userId)
        return { items: rows.map(toView), nextCursor: null }
      }).pipe(Effect.withSpan("Feedback.ofConversation"))

    /**
     * Every user's ratings per model, in `[from, to)` (by when each rating as it stands was given): up,
     * down, the share of up and the reasons; the totals are the groups' sums.
     */
    const summary = (
      query: FeedbackSummaryQuery
    ): Effect.Effect<FeedbackSummary, Forbidden | ValidationError, CurrentActor> =>
      Effect.gen(function*() {
        yield* administering
        const filter = { from: query.from, to: query.to }
        yield* checkRange(filter)
        const counts = yield* repo.countsByModel(filter)
        const reasonRows = yield* repo.reasonsByModel(filter)
        const reasonsOf = new Map<string, Record<FeedbackReason, number>>()
        const allReasons = noReasons()
        for (const row of reasonRows) {
          const forModel = reasonsOf.get(modelKey(row)) ?? noReasons()
          forModel[row.reason] += row.count
          allReasons[row.reason] += row.count
          reasonsOf.set(modelKey(row), forModel)
        }
        const models: Array<ModelFeedback> = counts.map((row) => ({
          key: row.modelId ?? row.modelName ?? "",
          modelId: row.modelId,
          modelName: row.modelName,
          ...counted(row.up, row.down, reasonsOf.get(modelKey(row)) ?? noReasons())
        }))
        const up = models.reduce((sum, model) => sum + model.up, 0)
        const down = models.reduce((sum, model) => sum + model.down, 0)
        return new FeedbackSummary({
          from: query.from ?? null,
          to: query.to ?? null,
          totals: counted(up, down, allReasons),
          models
        }, true)
      }).pipe(Effect.withSpan("Feedback.summary"))

    /** Every user's ratings with their comments, newest first (by when given), filtered as asked. */
    const list = (
      query: FeedbackListQuery
    ): Effect.Effect<
      { readonly items: ReadonlyArray<FeedbackEntry>; readonly nextCursor: string | null },
      Forbidden | ValidationError,
      CurrentActor
    > =>
      Effect.gen(function*() {
        yield* administering
        const filter = { from: query.from, to: query.to, model: query.model, rating: query.rating }
        yield* checkRange(filter)
        const limit = query.limit ?? defaultLimit
        const rows = yield* repo.page(filter, yield* decodeCursor(query.cursor), limit + 1)
        const page = toPage(rows, limit, (row) => ({ at: DateTime.formatIso(row.updatedAt), id: row.id }), encodeCursor)
        return { items: page.items.map(toEntry), nextCursor: page.nextCursor }
      }).pipe(Effect.withSpan("Feedback.list"))

    return { set, remove, ofConversation, summary, list } as const
  })
}) {}

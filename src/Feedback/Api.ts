/**
 * Feedback on answers: a user rates the assistant messages of their own conversations (up or down,
 * with reasons from a fixed list and a comment), reads back their ratings of one conversation, and
 * administrators compare models by them: a summary per model and the entries themselves.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { Conflict, Forbidden, NotFound } from "../Domain/Errors.js"
import { NonNegativeInt } from "../Domain/Fields.js"
import { ConversationId, LlmModelId, MessageId, UserId, UuidV7 } from "../Domain/Ids.js"
import { Page, PageParams } from "../Domain/Pagination.js"
import { request } from "../Domain/Request.js"
import { Username } from "../Domain/User.js"
import { Whole } from "../Models/Api.js"

export const FeedbackId = UuidV7.pipe(Schema.brand("FeedbackId"))
export type FeedbackId = typeof FeedbackId.Type

export const FeedbackRating = Schema.Literal("up", "down").annotations({
  description: "`up`: a good answer; `down`: a bad one"
})
export type FeedbackRating = typeof FeedbackRating.Type

/** Why an answer was rated so: a small fixed vocabulary, so the report can count them. */
export const feedbackReasons = [
  "accurate",
  "helpful",
  "inaccurate",
  "incomplete",
  "off_topic",
  "unsafe",
  "too_long",
  "other"
] as const
export const FeedbackReason = Schema.Literal(...feedbackReasons)
export type FeedbackReason = typeof FeedbackReason.Type

export const maxCommentLength = 2000

export class FeedbackPayload extends Schema.Class<FeedbackPayload>("FeedbackPayload")({
  rating: FeedbackRating,
  reasons: Schema.optional(Schema.Array(FeedbackReason).pipe(Schema.maxItems(feedbackReasons.length)))
    .annotations({
      description: `Why, any of ${feedbackReasons.map((reason) => `\`${reason}\``).join(", ")} (each once)`
    }),
  comment: Schema.optional(Schema.NullOr(Schema.String.pipe(Schema.maxLength(maxCommentLength)))).annotations({
    description: `Free text, up to ${maxCommentLength} characters; empty or null for none`
  })
}) {}

/** A user's feedback on one answer, as its author sees it. */
export class FeedbackView extends Schema.Class<FeedbackView>("FeedbackView")({
  id: FeedbackId,
  conversationId: ConversationId,
  messageId: MessageId,
  rating: FeedbackRating,
  reasons: Schema.Array(FeedbackReason).annotations({ description: "In the vocabulary's order" }),
  comment: Schema.NullOr(Schema.String),
  modelId: Schema.NullOr(LlmModelId).annotations({
    description: "The answer's model when it was rated; null if it had none or the model was deleted since"
  }),
  modelName: Schema.NullOr(Schema.String).annotations({ description: "What the model was called then" }),
  createdAt: Schema.DateTimeUtc.annotations({ description: "When the answer was first rated" }),
  updatedAt: Schema.DateTimeUtc.annotations({
    description: "When the rating as it stands was given (`createdAt` until it is replaced)"
  })
}) {}

/** A feedback entry as administrators see it: whose it is, beside what it says. */
export class FeedbackEntry extends Schema.Class<FeedbackEntry>("FeedbackEntry")({
  ...FeedbackView.fields,
  userId: UserId,
  username: Username
}) {}

/** How a set of ratings came out; every reason of the vocabulary is named (0 when not given). */
const counts = {
  up: NonNegativeInt,
  down: NonNegativeInt,
  total: NonNegativeInt,
  upShare: Schema.NullOr(Schema.Number).annotations({
    description: "`up` / `total`, from 0 to 1; null when there is no rating"
  }),
  reasons: Schema.Record({ key: FeedbackReason, value: NonNegativeInt }).annotations({
    description: "How many ratings gave each reason"
  })
}

export const FeedbackCounts = Schema.Struct(counts).annotations({ identifier: "FeedbackCounts" })
export type FeedbackCounts = typeof FeedbackCounts.Type

export const ModelFeedback = Schema.Struct({
  key: Schema.String.annotations({
    description: "The model's id; for a deleted model, the name it had (what `model` filters the list by)"
  }),
  modelId: Schema.NullOr(LlmModelId),
  modelName: Schema.NullOr(Schema.String),
  ...counts
}).annotations({ identifier: "ModelFeedback" })
export type ModelFeedback = typeof ModelFeedback.Type

export class FeedbackSummary extends Schema.Class<FeedbackSummary>("FeedbackSummary")({
  from: Schema.NullOr(Schema.DateTimeUtc),
  to: Schema.NullOr(Schema.DateTimeUtc),
  totals: FeedbackCounts,
  models: Schema.Array(ModelFeedback).annotations({ description: "Most ratings first, then by model name" })
}) {}

/** The time range of the admin's report and list: ratings given at `from` or later, and before `to`. */
const FeedbackRange = {
  from: Schema.optional(Schema.DateTimeUtc).annotations({
    description: "Ratings given (or last replaced) from this time on (inclusive), ISO 8601"
  }),
  to: Schema.optional(Schema.DateTimeUtc).annotations({
    description: "Up to this time (exclusive), ISO 8601; not before `from`"
  })
}

export const FeedbackSummaryQuery = request(Schema.Struct(FeedbackRange))
export type FeedbackSummaryQuery = typeof FeedbackSummaryQuery.Type

export const FeedbackListQuery = request(Schema.Struct({
  ...PageParams.fields,
  ...FeedbackRange,
  model: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(500))).annotations({
    description: "Only this model's: its id, or for a deleted model the name it had (a summary group's `key`)"
  }),
  rating: Schema.optional(FeedbackRating)
}))
export type FeedbackListQuery = typeof FeedbackListQuery.Type

const AnswerPath = request(Schema.Struct({ id: ConversationId, messageId: MessageId }))
const ConversationPath = request(Schema.Struct({ id: ConversationId }))

export class FeedbackApi extends HttpApiGroup.make("feedback")
  .add(
    HttpApiEndpoint.put("setFeedback", "/api/v1/conversations/:id/messages/:messageId/feedback")
      .setPath(AnswerPath)
      .setPayload(request(FeedbackPayload))
      .addSuccess(FeedbackView)
      .addError(NotFound)
      .addError(Conflict)
      .annotate(OpenApi.Summary, "Rate an answer of yours, or replace your rating of it")
      .annotate(
        OpenApi.Description,
        "Only an assistant message can be rated (another role: 422). An answer still being written: 409. " +
          "Another user's conversation, a message deleted or not in it, a conversation in the trash: 404."
      )
  )
  .add(
    HttpApiEndpoint.del("deleteFeedback", "/api/v1/conversations/:id/messages/:messageId/feedback")
      .setPath(AnswerPath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Take your rating of an answer back (404 when there is none)")
  )
  .add(
    HttpApiEndpoint.get("listFeedback", "/api/v1/conversations/:id/feedback")
      .setPath(ConversationPath)
      .addSuccess(Whole(FeedbackView))
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Your ratings of this conversation's answers (those not deleted), oldest first")
  )
  .add(
    HttpApiEndpoint.get("feedbackSummary", "/api/v1/admin/feedback/summary")
      .setUrlParams(FeedbackSummaryQuery)
      .addSuccess(FeedbackSummary)
      .annotate(OpenApi.Summary, "Every user's ratings per model (admins): up, down, the share of up, reasons")
  )
  .add(
    HttpApiEndpoint.get("listAllFeedback", "/api/v1/admin/feedback")
      .setUrlParams(FeedbackListQuery)
      .addSuccess(Page(FeedbackEntry))
      .annotate(OpenApi.Summary, "Every user's ratings with their comments (admins), newest first")
  )
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Ratings of answers, and the per-model report on them")
{}

/**
 * Shares: read-only public links to a conversation or to an analysis, managed by their owner; and the
 * public side, which anyone with the link reads and reacts to without an account.
 */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { MessageRole } from "../Domain/Conversation.js"
import { Conflict, Forbidden, NotFound, RateLimited } from "../Domain/Errors.js"
import { JsonObject, NonNegativeInt } from "../Domain/Fields.js"
import { ConversationId, FileAnalysisId, FileId, UuidV7 } from "../Domain/Ids.js"
import { Page, PageParams } from "../Domain/Pagination.js"
import { request } from "../Domain/Request.js"

export const ShareId = UuidV7.pipe(Schema.brand("ShareId"))
export type ShareId = typeof ShareId.Type

/** The public link's part: 22 characters of base64url (128 random bits). */
export const ShareSlug = Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_-]{22}$/))

export const publicSharesPath = "/api/v1/public/shares"

export const Reaction = Schema.Literal("like", "love", "insightful", "funny")
export type Reaction = typeof Reaction.Type

export const Reactions = Schema.Record({ key: Schema.String, value: NonNegativeInt }).annotations({
  description: "How many times each reaction was given (`like`, `love`, `insightful`, `funny`)"
})

const tagPattern = /^[\p{L}\p{N}_ -]{1,40}$/u
const normalTag = (tag: string) => tag.trim().toLowerCase()

/**
 * A tag: trimmed and lower-cased (so `" AI "` and `"ai"` are one tag), then 1 to 40 letters, digits,
 * `-`, `_` or spaces. Checked and normalised as the server decodes it, so a client sends tags as its
 * user typed them (an RPC client too: the type side is any string).
 */
export const ShareTag = Schema.transform(
  Schema.String.pipe(
    Schema.filter((tag) =>
      tagPattern.test(normalTag(tag)) || "A tag is 1 to 40 letters, digits, '-', '_' or spaces (once trimmed)"
    )
  ),
  Schema.String,
  { strict: true, decode: normalTag, encode: (tag) => tag }
).annotations({ description: "Trimmed and lower-cased; then 1 to 40 letters, digits, `-`, `_` or spaces" })

/** A share's tags: duplicates (once trimmed and lower-cased) folded, then at most 20. */
export const ShareTags = Schema.transform(
  Schema.Array(ShareTag),
  Schema.Array(Schema.String),
  { strict: true, decode: (tags) => [...new Set(tags)], encode: (tags) => tags }
).pipe(
  Schema.maxItems(20, { message: () => "At most 20 tags" })
).annotations({ description: "At most 20 tags (once duplicates are folded)" })

export const ShareDescription = Schema.String.pipe(Schema.maxLength(2000)).annotations({
  description: "Plain text shown with the share, up to 2,000 characters"
})

const ShareTitle = Schema.String.pipe(Schema.maxLength(500))

const ShareKind = Schema.Literal("conversation", "analysis")

export class ShareView extends Schema.Class<ShareView>("ShareView")({
  id: ShareId,
  slug: ShareSlug,
  path: Schema.String.annotations({ description: "The public link's path on this server" }),
  kind: ShareKind,
  targetId: UuidV7.annotations({ description: "The conversation's or the analysis' id" }),
  title: Schema.String,
  description: Schema.String,
  tags: Schema.Array(Schema.String).annotations({ description: "Sorted" }),
  viewCount: NonNegativeInt,
  reactions: Reactions,
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.NullOr(Schema.DateTimeUtc).annotations({
    description: "When the owner last changed the share; null if never"
  }),
  revokedAt: Schema.NullOr(Schema.DateTimeUtc)
}) {}

export class SharedMessage extends Schema.Class<SharedMessage>("SharedMessage")({
  role: MessageRole,
  content: Schema.String,
  modelName: Schema.NullOr(Schema.String),
  createdAt: Schema.DateTimeUtc
}) {}

export class SharedConversation extends Schema.Class<SharedConversation>("SharedConversation")({
  messages: Schema.Array(SharedMessage)
}) {}

export class SharedAnalysis extends Schema.Class<SharedAnalysis>("SharedAnalysis")({
  fileName: Schema.String,
  contentType: Schema.String,
  analysis: JsonObject,
  completedAt: Schema.NullOr(Schema.DateTimeUtc)
}) {}

/** What a share publishes, as taken when it was created (or last refreshed). */
export const ShareContent = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("conversation"), conversation: SharedConversation }),
  Schema.Struct({ kind: Schema.Literal("analysis"), analysis: SharedAnalysis })
)
export type ShareContent = typeof ShareContent.Type

export class PublicShare extends Schema.Class<PublicShare>("PublicShare")({
  title: Schema.String,
  description: Schema.String,
  tags: Schema.Array(Schema.String).annotations({ description: "Sorted" }),
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.NullOr(Schema.DateTimeUtc),
  content: ShareContent,
  viewCount: NonNegativeInt,
  reactions: Reactions
}) {}

export class CreateSharePayload extends Schema.Class<CreateSharePayload>("CreateSharePayload")({
  conversationId: Schema.optional(ConversationId).annotations({
    description: "Share this conversation's active branch as it is now"
  }),
  fileId: Schema.optional(FileId),
  analysisId: Schema.optional(FileAnalysisId).annotations({
    description: "With `fileId`: share this complete analysis of the file"
  }),
  title: Schema.optional(ShareTitle).annotations({
    description: "The public title; the conversation's title or the file's name if omitted"
  }),
  description: Schema.optional(ShareDescription),
  tags: Schema.optional(ShareTags)
}) {}

export class UpdateSharePayload extends Schema.Class<UpdateSharePayload>("UpdateSharePayload")({
  title: Schema.optional(ShareTitle),
  description: Schema.optional(ShareDescription),
  tags: Schema.optional(ShareTags).annotations({
    description: "The share's whole set of tags from now on (at most 20)"
  }),
  refresh: Schema.optional(Schema.Boolean).annotations({
    description: "Take the snapshot again now: the conversation's active branch, or the analysis, as they are"
  })
}) {}

export const ShareListQuery = request(Schema.Struct({
  ...PageParams.fields,
  tag: Schema.optional(ShareTag).annotations({ description: "Only the shares carrying this tag" }),
  q: Schema.optional(Schema.String.pipe(Schema.maxLength(200))).annotations({
    description: "Only the shares whose title or description contains this text (ignoring case)"
  }),
  kind: Schema.optional(ShareKind),
  status: Schema.optional(Schema.Literal("active", "revoked")).annotations({
    description: "Only the live shares, or only the revoked ones (both when omitted)"
  })
}))
export type ShareListQuery = typeof ShareListQuery.Type

export class ShareStats extends Schema.Class<ShareStats>("ShareStats")({
  shares: NonNegativeInt,
  active: NonNegativeInt,
  revoked: NonNegativeInt,
  views: NonNegativeInt.annotations({ description: "Views of all your shares, revoked ones included" }),
  reactions: Reactions.annotations({
    description: "Reactions to all your shares, revoked ones included, each of `like`, `love`, `insightful`, `funny`"
  })
}) {}

export class ReactPayload extends Schema.Class<ReactPayload>("ReactPayload")({ reaction: Reaction }) {}

export class ReactionCounts extends Schema.Class<ReactionCounts>("ReactionCounts")({ reactions: Reactions }) {}

const SharePath = request(Schema.Struct({ id: ShareId }))
const SlugPath = request(Schema.Struct({ slug: ShareSlug }))

export class SharesApi extends HttpApiGroup.make("shares")
  .add(
    HttpApiEndpoint.post("createShare", "/api/v1/shares")
      .setPayload(request(CreateSharePayload))
      .addSuccess(ShareView, { status: 201 })
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Publish a conversation or an analysis as a read-only public link (a snapshot)")
  )
  .add(
    HttpApiEndpoint.get("listShares", "/api/v1/shares")
      .setUrlParams(ShareListQuery)
      .addSuccess(Page(ShareView))
      .annotate(OpenApi.Summary, "Your shares, newest first, with their views and reactions; filtered if asked")
  )
  .add(
    HttpApiEndpoint.get("shareStats", "/api/v1/shares/stats")
      .addSuccess(ShareStats)
      .annotate(OpenApi.Summary, "How many shares you have, and their views and reactions in total")
  )
  .add(
    HttpApiEndpoint.get("getShare", "/api/v1/shares/:id")
      .setPath(SharePath)
      .addSuccess(ShareView)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.patch("updateShare", "/api/v1/shares/:id")
      .setPath(SharePath)
      .setPayload(request(UpdateSharePayload))
      .addSuccess(ShareView)
      .addError(NotFound)
      .addError(Conflict)
      .annotate(
        OpenApi.Summary,
        "Change a share's title, description or tags, or take its snapshot again (not once revoked: 409)"
      )
  )
  .add(
    HttpApiEndpoint.del("revokeShare", "/api/v1/shares/:id")
      .setPath(SharePath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Take the public link down for good")
  )
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Public read-only links to your conversations and analyses")
{}

export class PublicSharesApi extends HttpApiGroup.make("publicShares")
  .add(
    HttpApiEndpoint.get("viewShare", `${publicSharesPath}/:slug`)
      .setPath(SlugPath)
      .addSuccess(PublicShare)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "A shared conversation or analysis (counted as a view); no account needed")
  )
  .add(
    HttpApiEndpoint.post("reactToShare", `${publicSharesPath}/:slug/reactions`)
      .setPath(SlugPath)
      .setPayload(request(ReactPayload))
      .addSuccess(ReactionCounts)
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(OpenApi.Summary, "React to a share (limited per client address); no account needed")
  )
  .annotate(OpenApi.Description, "What shares publish, for anyone with the link")
{}

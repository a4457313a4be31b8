/**
 * Shares: an owner publishes a snapshot of a conversation's active branch, or of a complete analysis
 * of one of their files, under a random public link; anyone with the link reads it (a view is
 * counted) and reacts to it (limited per client address), without an account. The owner describes
 * and tags their shares, finds them by those, changes them and may take the snapshot again
 * (`refresh`); a revoked share is not changed any more. Revoking a share takes the link down; an
 * unknown or revoked link answers 404 alike.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Option } from "effect"
import * as Crypto from "node:crypto"
import { AuditLog } from "./Audit.js"
import { requirePermission } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { ConversationRepo } from "./Conversations/ConversationRepo.js"
import type { Actor } from "./Domain/Actor.js"
import { Conflict, invalid, NotFound, orNotFound } from "./Domain/Errors.js"
import type { ConversationId, FileAnalysisId } from "./Domain/Ids.js"
import { pageByCreation } from "./Domain/Pagination.js"
import { FilesRepo } from "./Files/FilesRepo.js"
import {
  type CreateSharePayload,
  PublicShare,
  publicSharesPath,
  type Reaction,
  ReactionCounts,
  type ShareContent,
  SharedAnalysis,
  SharedConversation,
  SharedMessage,
  type ShareId,
  type ShareListQuery,
  ShareStats,
  ShareView,
  type UpdateSharePayload
} from "./Shares/Api.js"
import { type ShareRow, SharesRepo } from "./Shares/SharesRepo.js"
import { inTransaction } from "./Sql.js"

/** What the owner sees of a share: the row with its reaction counts and its tags. */
const shareView = (row: ShareRow, reactions: Record<string, number>, tags: ReadonlyArray<string>) =>
  new ShareView({
    id: row.id,
    slug: row.slug,
    path: `${publicSharesPath}/${row.slug}`,
    kind: row.kind,
    targetId: row.targetId,
    title: row.title,
    description: row.description,
    tags,
    viewCount: row.viewCount,
    reactions,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    revokedAt: row.revokedAt
  }, true)

/** What a share is of: a conversation, or an analysis of a file. */
type ShareSource = Pick<CreateSharePayload, "conversationId" | "fileId" | "analysisId">

const reactionKinds: ReadonlyArray<Reaction> = ["like", "love", "insightful", "funny"]

export class Shares extends Effect.Service<Shares>()("Shares", {
  effect: Effect.gen(function*() {
    const repo = yield* SharesRepo
    const conversations = yield* ConversationRepo
    const files = yield* FilesRepo
    const rateLimits = yield* RateLimits
    const audit = yield* AuditLog
    const transaction = inTransaction(yield* SqlClient.SqlClient)

    const readable = requirePermission("conversations:read")
    const writable = requirePermission("conversations:write")

    /** What the request publishes, as it is now: a conversation's active branch or a complete analysis. */
    const snapshot = (actor: Actor, payload: ShareSource) =>
      Effect.gen(function*() {
        if ((payload.conversationId === undefined) === (payload.fileId === undefined)) {
          return yield* invalid(["conversationId"], "Share either a conversation or a file's analysis")
        }
        if (payload.conversationId !== undefined) {
          const { branch, conversation } = yield* conversations.liveBranch(actor.userId, payload.conversationId).pipe(
            orNotFound("No such conversation")
          )
          const messages = branch
            .filter((message) => message.content.length > 0 && message.role !== "tool")
            .map((message) =>
              new SharedMessage({
                role: message.role,
                content: message.content,
                modelName: message.role === "assistant" ? message.modelName : null,
                createdAt: message.createdAt
              }, true)
            )
          if (messages.length === 0) return yield* invalid(["conversationId"], "The conversation has no messages yet")
          const content: ShareContent = { kind: "conversation", conversation: new SharedConversation({ messages }) }
          return {
            kind: "conversation" as const,
            targetId: conversation.id as string,
            title: conversation.title.trim() === "" ? "Untitled conversation" : conversation.title,
            content
          }
        }
        if (payload.analysisId === undefined) {
          return yield* invalid(["analysisId"], "Name the analysis of the file to share")
        }
        yield* requirePermission("files:read")
        const file = yield* files.findOwn(payload.fileId!, actor.userId).pipe(orNotFound("No such file"))
        const analysis = yield* files.analysisOf(payload.analysisId, file.id).pipe(orNotFound("No such analysis"))
        if (analysis.status !== "complete") {
          return yield* invalid(["analysisId"], "Only a complete analysis can be shared")
        }
        const content: ShareContent = {
          kind: "analysis",
          analysis: new SharedAnalysis({
            fileName: file.originalName,
            contentType: file.contentType,
            analysis: analysis.analysis,
            completedAt: Option.getOrNull(analysis.completedAt)
          })
        }
        return { kind: "analysis" as const, targetId: analysis.id as string, title: file.originalName, content }
      })

    const create = (payload: CreateSharePayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const published = yield* snapshot(actor, payload)
        const row = yield* transaction(Effect.gen(function*() {
          const row = yield* repo.insert({
            userId: actor.userId,
            slug: Crypto.randomBytes(16).toString("base64url"),
            kind: published.kind,
            targetId: published.targetId,
            title: payload.title ?? published.title,
            description: payload.description ?? "",
            content: published.content
          })
          if (payload.tags !== undefined) yield* repo.setTags(row.id, payload.tags)
          // Made public: who published what is kept (the link itself is not).
          yield* audit.record({
            action: "share.created",
            actor,
            target: { type: "share", id: row.id },
            metadata: { kind: published.kind, targetId: published.targetId }
          })
          return row
        }))
        return shareView(row, {}, [...(payload.tags ?? [])].sort())
      }).pipe(Effect.withSpan("Shares.create"))

    /** The owner's views of these rows: each with its reaction counts and tags. */
    const views = (rows: ReadonlyArray<ShareRow>) =>
      Effect.gen(function*() {
        const ids = rows.map((row) => row.id)
        const counts = yield* repo.reactionsOf(ids)
        const tags = yield* repo.tagsOf(ids)
        return rows.map((row) => shareView(row, counts.get(row.id) ?? {}, tags.get(row.id) ?? []))
      })

    const list = (query: ShareListQuery) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const page = yield* pageByCreation(query, (after, rows) => repo.page(actor.userId, query, after, rows))
        return { items: yield* views(page.items), nextCursor: page.nextCursor }
      }).pipe(Effect.withSpan("Shares.list"))

    const get = (id: ShareId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const row = yield* repo.findOwn(id, actor.userId).pipe(orNotFound("No such share"))
        return (yield* views([row]))[0]!
      })

    /**
     * Where a share's snapshot is taken from again: its conversation, or its analysis and that one's
     * file (whose owner `snapshot` checks, as when the share was created).
     */
    const sourceOf = (row: ShareRow): Effect.Effect<ShareSource, NotFound> =>
      row.kind === "conversation"
        ? Effect.succeed({ conversationId: row.targetId as ConversationId })
        : Effect.map(
          files.jobRow(row.targetId as FileAnalysisId).pipe(orNotFound("No such analysis")),
          (analysis) => ({ fileId: analysis.fileId, analysisId: row.targetId as FileAnalysisId })
        )

    /**
     * Changes what was given: the title, the description, the whole set of tags, and (`refresh`) the
     * snapshot, taken again as the source is now. A revoked share stays as it was (409). The share and
     * its tags are written in one transaction; nothing given, nothing is written.
     */
    const update = (id: ShareId, payload: UpdateSharePayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const found = yield* repo.findOwn(id, actor.userId).pipe(orNotFound("No such share"))
        const revoked = new Conflict({ message: "The share was revoked: a revoked link is down for good" })
        if (found.revokedAt !== null) return yield* revoked
        const published = payload.refresh === true
          ? yield* Effect.flatMap(sourceOf(found), (source) => snapshot(actor, source))
          : undefined
        const fields = {
          ...(payload.title === undefined ? {} : { title: payload.title }),
          ...(payload.description === undefined ? {} : { description: payload.description }),
          ...(published === undefined ? {} : { content: published.content })
        }
        const changed = [
          ...(payload.title === undefined ? [] : ["title"]),
          ...(payload.description === undefined ? [] : ["description"]),
          ...(payload.tags === undefined ? [] : ["tags"]),
          ...(published === undefined ? [] : ["snapshot"])
        ]
        if (changed.length === 0) return (yield* views([found]))[0]!
        const row = yield* transaction(Effect.gen(function*() {
          const row = yield* Effect.flatMap(
            repo.update(id, actor.userId, fields),
            Option.match({ onNone: () => Effect.fail(revoked), onSome: Effect.succeed })
          )
          if (payload.tags !== undefined) yield* repo.setTags(id, payload.tags)
          // What changed, not to what: the trail keeps neither the link nor the published text.
          yield* audit.record({
            action: "share.updated",
            actor,
            target: { type: "share", id },
            metadata: { changed }
          })
          return row
        }))
        return (yield* views([row]))[0]!
      }).pipe(Effect.withSpan("Shares.update"))

    /** The owner's totals over all their shares, revoked ones included; every kind of reaction named. */
    const stats = Effect.gen(function*() {
      const actor = yield* readable
      const totals = yield* repo.statsOf(actor.userId)
      return new ShareStats({
        shares: totals.shares,
        active: totals.shares - totals.revoked,
        revoked: totals.revoked,
        views: totals.views,
        reactions: Object.fromEntries(reactionKinds.map((kind) => [kind, totals.reactions[kind] ?? 0]))
      }, true)
    }).pipe(Effect.withSpan("Shares.stats"))

    const revoke = (id: ShareId) =>
      Effect.gen(function*() {
        const actor = yield* writable
        yield* transaction(Effect.gen(function*() {
          if (!(yield* repo.revoke(id, actor.userId))) return yield* new NotFound({ message: "No such share" })
          yield* audit.record({ action: "share.revoked", actor, target: { type: "share", id } })
        }))
      }).pipe(Effect.withSpan("Shares.revoke"))

    // --- the public side

    const gone = new NotFound({ message: "No such share" })

    const view = (slug: string) =>
      Effect.gen(function*() {
        const found = yield* Effect.flatMap(
          repo.findLive(slug),
          Option.match({
            onNone: () => Effect.fail(gone),
            onSome: Effect.succeed
          })
        )
        // Counted once per address and hour: reloading the page is not another view.
        const row = (yield* rateLimits.firstShareView(found.id))
          ? Option.getOrElse(yield* repo.countView(found.id), () => found)
          : found
        const reactions = (yield* repo.reactionsOf([row.id])).get(row.id) ?? {}
        const tags = (yield* repo.tagsOf([row.id])).get(row.id) ?? []
        return new PublicShare({
          title: row.title,
          description: row.description,
          tags,
          createdAt: row.createdAt,
          updatedAt: row.updatedAt,
          content: row.content,
          viewCount: row.viewCount,
          reactions
        }, true)
      }).pipe(Effect.withSpan("Shares.view"))

    const react = (slug: string, reaction: Reaction) =>
      Effect.gen(function*() {
        yield* rateLimits.shareReaction
        const id = yield* Effect.flatMap(
          repo.react(slug, reaction),
          Option.match({
            onNone: () => Effect.fail(gone),
            onSome: Effect.succeed
          })
        )
        return new ReactionCounts({ reactions: (yield* repo.reactionsOf([id])).get(id) ?? {} }, true)
      }).pipe(Effect.withSpan("Shares.react"))

    return { create, list, get, update, stats, revoke, view, react } as const
  })
}) {}

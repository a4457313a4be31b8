/**
 * Shares: an owner publishes a snapshot of a conversation's active branch, or of a complete analysis
 * of one of their files, under a random public link; anyone with the link reads it (a view is
 * counted) and reacts to it (limited per client address), without an account. Revoking a share
 * takes the link down; an unknown or revoked link answers 404 alike.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Option } from "effect"
import * as Crypto from "node:crypto"
import { AuditLog } from "./Audit.js"
import { requirePermission } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { ConversationRepo } from "./Conversations/ConversationRepo.js"
import type { Actor } from "./Domain/Actor.js"
import { invalid, NotFound, orNotFound } from "./Domain/Errors.js"
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
  ShareView
} from "./Shares/Api.js"
import { type ShareRow, SharesRepo } from "./Shares/SharesRepo.js"
import { inTransaction } from "./Sql.js"

const shareView = (row: ShareRow, reactions: Record<string, number>) =>
  new ShareView({
    id: row.id,
    slug: row.slug,
    path: `${publicSharesPath}/${row.slug}`,
    kind: row.kind,
    targetId: row.targetId,
    title: row.title,
    viewCount: row.viewCount,
    reactions,
    createdAt: row.createdAt,
    revokedAt: row.revokedAt
  }, true)

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
    const snapshot = (actor: Actor, payload: CreateSharePayload) =>
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
            content: published.content
          })
          // Made public: who published what is kept (the link itself is not).
          yield* audit.record({
            action: "share.created",
            actor,
            target: { type: "share", id: row.id },
            metadata: { kind: published.kind, targetId: published.targetId }
          })
          return row
        }))
        return shareView(row, {})
      }).pipe(Effect.withSpan("Shares.create"))

    const withReactions = (rows: ReadonlyArray<ShareRow>) =>
      Effect.map(
        repo.reactionsOf(rows.map((row) => row.id)),
        (counts) => rows.map((row) => shareView(row, counts.get(row.id) ?? {}))
      )

    const list = (query: { readonly limit?: number | undefined; readonly cursor?: string | undefined }) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const page = yield* pageByCreation(query, (after, rows) => repo.page(actor.userId, after, rows))
        return { items: yield* withReactions(page.items), nextCursor: page.nextCursor }
      }).pipe(Effect.withSpan("Shares.list"))

    const get = (id: ShareId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const row = yield* repo.findOwn(id, actor.userId).pipe(orNotFound("No such share"))
        return (yield* withReactions([row]))[0]!
      })

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
        return new PublicShare({
          title: row.title,
          createdAt: row.createdAt,
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

    return { create, list, get, revoke, view, react } as const
  })
}) {}

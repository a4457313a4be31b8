/** Reads everything stored about one user, for the personal-data export. */
import { SqlClient } from "@effect/sql"
import { Array, DateTime, Effect, Option, Schema } from "effect"
import { exportDocument } from "../Conversations/Export.js"
import { Conversation, Message, Thread } from "../Domain/Conversation.js"
import type { UserId } from "../Domain/Ids.js"

const parseJsonColumns = (row: Record<string, unknown>, columns: ReadonlyArray<string>) => {
  const out: Record<string, unknown> = { ...row }
  for (const column of columns) {
    const value = out[column]
    if (typeof value === "string") out[column] = JSON.parse(value)
  }
  return out
}

export class PersonalDataRepo extends Effect.Service<PersonalDataRepo>()("Users/PersonalDataRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    const collect = (userId: UserId) =>
      Effect.gen(function*() {
        const sessions = yield* sql<Record<string, unknown>>`
          SELECT created_at, last_used_at, expires_at, revoked_at, ip_address, user_agent
          FROM sessions WHERE user_id = ${userId} ORDER BY created_at`
        const identities = yield* sql<Record<string, unknown>>`
          SELECT issuer, subject, email, created_at, last_login_at
          FROM oidc_identities WHERE user_id = ${userId} ORDER BY created_at, id`
        const conversations = yield* Effect.flatMap(
          sql`SELECT * FROM conversations WHERE user_id = ${userId} ORDER BY created_at, id`,
          Schema.decodeUnknown(Schema.Array(Conversation))
        )
        const messages = yield* Effect.flatMap(
          sql`
            SELECT messages.* FROM messages JOIN conversations ON conversations.id = messages.conversation_id
            WHERE conversations.user_id = ${userId} ORDER BY messages.created_at, messages.id`,
          Schema.decodeUnknown(Schema.Array(Message))
        )
        const threads = yield* Effect.flatMap(
          sql`SELECT * FROM threads WHERE user_id = ${userId} ORDER BY created_at, id`,
          Schema.decodeUnknown(Schema.Array(Thread))
        )
        const files = yield* sql<Record<string, unknown>>`
          SELECT id, original_name, content_type, size_bytes, sha256, deleted_at, created_at
          FROM files WHERE user_id = ${userId} ORDER BY created_at, id`
        const fileAnalyses = yield* sql<Record<string, unknown>>`
          SELECT a.id, a.file_id, a.status, a.model_id, a.analysis, a.extracted_text, a.error, a.attempts,
                 a.created_at, a.completed_at
          FROM file_analyses a JOIN files f ON f.id = a.file_id
          WHERE f.user_id = ${userId} ORDER BY a.created_at, a.id`
        const graphEntities = yield* sql<Record<string, unknown>>`
          SELECT id, name, type, description, confidence, mention_count, created_at, updated_at
          FROM graph_entities WHERE user_id = ${userId} ORDER BY created_at, id`
        const graphRelationships = yield* sql<Record<string, unknown>>`
          SELECT source_entity_id, target_entity_id, type, confidence, source_kind, source_id, created_at
          FROM graph_relationships WHERE user_id = ${userId} ORDER BY created_at, id`
        const graphExtractions = yield* sql<Record<string, unknown>>`
          SELECT id, source_kind, source_id, model_id, status, entity_count, relationship_count, error,
                 created_at, completed_at
          FROM graph_extractions WHERE user_id = ${userId} ORDER BY created_at, id`
        const shares = yield* sql<Record<string, unknown>>`
          SELECT id, slug, kind, target_id, title, description, content, view_count, revoked_at, created_at, updated_at
          FROM shares WHERE user_id = ${userId} ORDER BY created_at, id`
        const shareTags = yield* sql<{ readonly shareId: string; readonly tag: string }>`
          SELECT t.share_id, t.tag FROM share_tags t JOIN shares s ON s.id = t.share_id
          WHERE s.user_id = ${userId}`
        const tagsOf = Array.groupBy(shareTags, (row) => row.shareId)
        const modelConfigs = yield* sql<Record<string, unknown>>`
          SELECT id, name, model_id, system_prompt, temperature, top_p, max_tokens, stop, extra_params, created_at
          FROM model_configs WHERE owner_id = ${userId} ORDER BY created_at, id`
        const usage = yield* sql<Record<string, unknown>>`
          SELECT api_key_id, model_id, model_name, source, prompt_tokens, completion_tokens, created_at
          FROM usage_records WHERE user_id = ${userId} ORDER BY created_at, id`
        const feedback = yield* sql<Record<string, unknown>>`
          SELECT id, conversation_id, message_id, rating, comment, model_id, model_name, created_at, updated_at
          FROM message_feedback WHERE user_id = ${userId} ORDER BY created_at, id`
        const feedbackReasons = yield* sql<{ readonly feedbackId: string; readonly reason: string }>`
          SELECT r.feedback_id, r.reason FROM message_feedback_reasons r
          JOIN message_feedback f ON f.id = r.feedback_id
          WHERE f.user_id = ${userId}`
        const reasonsOf = Array.groupBy(feedbackReasons, (row) => row.feedbackId)
        const exportedAt = yield* DateTime.now
        const messagesOf = Array.groupBy(messages, (message) => message.conversationId)
        const threadsOf = Array.groupBy(threads, (thread) => thread.conversationId)
        return {
          sessions,
          identities,
          conversations: conversations.map((conversation) => ({
            id: conversation.id,
            deletedAt: Option.getOrNull(conversation.deletedAt),
            ...exportDocument(
              conversation,
              messagesOf[conversation.id] ?? [],
              threadsOf[conversation.id] ?? [],
              exportedAt
            )
          })),
          files,
          fileAnalyses: fileAnalyses.map((analysis) => parseJsonColumns(analysis, ["analysis"])),
          graph: { entities: graphEntities, relationships: graphRelationships, extractions: graphExtractions },
          shares: shares.map((share) => ({
            ...parseJsonColumns(share, ["content"]),
            tags: (tagsOf[share.id as string] ?? []).map((row) => row.tag).sort()
          })),
          modelConfigs: modelConfigs.map((config) => parseJsonColumns(config, ["stop", "extraParams"])),
          usage,
          feedback: feedback.map((rating) => ({
            ...rating,
            reasons: (reasonsOf[rating.id as string] ?? []).map((row) => row.reason).sort()
          }))
        }
      }).pipe(Effect.orDie)

    return { collect } as const
  })
}) {}

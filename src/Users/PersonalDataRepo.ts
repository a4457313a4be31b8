/** Reads everything stored about one user, for the personal-data export. */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
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
        const conversations = yield* sql<Record<string, unknown>>`
          SELECT id, title, pinned, archived, deleted_at, created_at, updated_at
          FROM conversations WHERE user_id = ${userId} ORDER BY created_at, id`
        const messages = yield* sql<Record<string, unknown>>`
          SELECT messages.id, messages.conversation_id, messages.parent_id, messages.thread_id, messages.role,
                 messages.content, messages.status, messages.model_name, messages.prompt_tokens,
                 messages.completion_tokens, messages.tool_calls, messages.metadata, messages.deleted_at,
                 messages.created_at
          FROM messages JOIN conversations ON conversations.id = messages.conversation_id
          WHERE conversations.user_id = ${userId} ORDER BY messages.created_at, messages.id`
        const threads = yield* sql<Record<string, unknown>>`
          SELECT id, conversation_id, anchor_message_id, title, created_at FROM threads
          WHERE user_id = ${userId} ORDER BY created_at, id`
        const files = yield* sql<Record<string, unknown>>`
          SELECT id, original_name, content_type, size_bytes, sha256, deleted_at, created_at
          FROM files WHERE user_id = ${userId} ORDER BY created_at, id`
        const modelConfigs = yield* sql<Record<string, unknown>>`
          SELECT id, name, model_id, system_prompt, temperature, top_p, max_tokens, stop, extra_params, created_at
          FROM model_configs WHERE owner_id = ${userId} ORDER BY created_at, id`
        const byConversation = new Map<unknown, Array<Record<string, unknown>>>()
        for (const message of messages) {
          const list = byConversation.get(message.conversationId) ?? []
          list.push(parseJsonColumns(message, ["toolCalls", "metadata"]))
          byConversation.set(message.conversationId, list)
        }
        return {
          sessions,
          conversations: conversations.map((conversation) => ({
            ...conversation,
            messages: byConversation.get(conversation.id) ?? [],
            threads: threads.filter((thread) => thread.conversationId === conversation.id)
          })),
          files,
          modelConfigs: modelConfigs.map((config) => parseJsonColumns(config, ["stop", "extraParams"]))
        }
      }).pipe(Effect.orDie)

    return { collect } as const
  })
}) {}

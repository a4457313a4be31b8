/**
 * Each message's position among its live siblings ("2 / 3"), kept on the row:
 * reading a branch of a thousand messages no longer counts the siblings of
 * each (two subqueries a row, most of the query's time). The repository
 * renumbers the children of a parent whenever one is added or deleted, in the
 * same transaction; thread messages have no siblings (0 of 1).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE messages ADD COLUMN sibling_index integer NOT NULL DEFAULT 0 CHECK (sibling_index >= 0)`
  yield* sql`ALTER TABLE messages ADD COLUMN sibling_count integer NOT NULL DEFAULT 1 CHECK (sibling_count >= 1)`
  yield* sql`UPDATE messages SET
    sibling_index = (
      SELECT count(*) FROM messages s WHERE s.parent_id = messages.parent_id AND s.deleted_at IS NULL
        AND (s.created_at < messages.created_at OR (s.created_at = messages.created_at AND s.id < messages.id))
    ),
    sibling_count = (SELECT count(*) FROM messages s WHERE s.parent_id = messages.parent_id AND s.deleted_at IS NULL)
    WHERE parent_id IS NOT NULL AND deleted_at IS NULL`
  yield* sql`UPDATE messages SET
    sibling_index = (
      SELECT count(*) FROM messages s
      WHERE s.conversation_id = messages.conversation_id AND s.parent_id IS NULL AND s.thread_id IS NULL
        AND s.deleted_at IS NULL
        AND (s.created_at < messages.created_at OR (s.created_at = messages.created_at AND s.id < messages.id))
    ),
    sibling_count = (
      SELECT count(*) FROM messages s
      WHERE s.conversation_id = messages.conversation_id AND s.parent_id IS NULL AND s.thread_id IS NULL
        AND s.deleted_at IS NULL
    )
    WHERE parent_id IS NULL AND thread_id IS NULL AND deleted_at IS NULL`
})

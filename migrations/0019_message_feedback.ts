/**
 * Feedback on answers: a user's rating of an assistant message of their own conversation, one per
 * (message, user), `up` or `down`, with an optional comment and reasons from a fixed vocabulary
 * (`message_feedback_reasons`, one row per reason, checked by the database). The answer's model is
 * kept as it was when it was rated (`model_name` too, as usage rows keep it), so the per-model report
 * stays readable after the model goes.
 *
 * `updated_at` is when the rating as it stands was given (the first time, `created_at`): the admin's
 * report and list go by it. Everything goes with the message (purging its conversation) and with the
 * user (erasing the account).
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly timestamp: string
}

const reasons = ["accurate", "helpful", "inaccurate", "incomplete", "off_topic", "unsafe", "too_long", "other"]

const statements = (t: Types) => [
  `CREATE TABLE message_feedback (
    id ${t.id} PRIMARY KEY,
    message_id ${t.id} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    conversation_id ${t.id} NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    rating text NOT NULL CHECK (rating IN ('up', 'down')),
    comment text CHECK (length(comment) BETWEEN 1 AND 2000),
    model_id ${t.id} REFERENCES llm_models (id) ON DELETE SET NULL,
    model_name text,
    created_at ${t.timestamp} NOT NULL,
    updated_at ${t.timestamp} NOT NULL,
    UNIQUE (message_id, user_id)
  )`,
  // The owner's feedback in one conversation.
  `CREATE INDEX message_feedback_conversation_idx ON message_feedback (conversation_id, user_id)`,
  // The admin's list and report, newest first, over a time range.
  `CREATE INDEX message_feedback_updated_idx ON message_feedback (updated_at, id)`,
  // Deleting a user, or a model (which sets model_id to NULL), without a scan of the table.
  `CREATE INDEX message_feedback_user_idx ON message_feedback (user_id)`,
  `CREATE INDEX message_feedback_model_idx ON message_feedback (model_id) WHERE model_id IS NOT NULL`,
  `CREATE TABLE message_feedback_reasons (
    feedback_id ${t.id} NOT NULL REFERENCES message_feedback (id) ON DELETE CASCADE,
    reason text NOT NULL CHECK (reason IN (${reasons.map((reason) => `'${reason}'`).join(", ")})),
    PRIMARY KEY (feedback_id, reason)
  )`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const types = sql.onDialectOrElse({
    pg: (): Types => ({ id: "uuid", timestamp: "timestamptz" }),
    orElse: (): Types => ({ id: "text", timestamp: "text" })
  })
  for (const statement of statements(types)) {
    yield* sql.unsafe(statement)
  }
})

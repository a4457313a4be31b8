/**
 * The initial schema: identity, models, conversations and files.
 *
 * One definition for both dialects: only the column types differ (see
 * `types`), so the constraints and indexes mean the same on SQLite and
 * PostgreSQL. Timestamps are UTC; SQLite keeps them as ISO-8601 text, which
 * sorts in time order.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import { generateUuid } from "../src/Domain/Ids.js"

interface ColumnTypes {
  readonly id: string
  readonly timestamp: string
  readonly now: string
  readonly json: string
  readonly bool: (column: string) => string
  readonly bigint: string
  readonly real: string
  readonly text: string
}

const types = {
  pg: {
    id: "uuid",
    timestamp: "timestamptz",
    now: "now()",
    json: "jsonb",
    bool: () => "boolean",
    bigint: "bigint",
    real: "double precision",
    text: "text"
  },
  sqlite: {
    id: "text",
    timestamp: "text",
    now: "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
    json: "text",
    bool: (column) => `integer CHECK (${column} IN (0, 1))`,
    bigint: "integer",
    real: "real",
    text: "text"
  }
} satisfies Record<string, ColumnTypes>

const oneOf = (column: string, values: ReadonlyArray<string>) =>
  `CHECK (${column} IN (${values.map((value) => `'${value}'`).join(", ")}))`

const statements = (t: ColumnTypes, dialect: "pg" | "sqlite"): ReadonlyArray<string> => {
  const created = `created_at ${t.timestamp} NOT NULL DEFAULT ${t.now}`
  const updated = `updated_at ${t.timestamp} NOT NULL DEFAULT ${t.now}`
  const bool = (column: string, fallback: boolean) =>
    `${column} ${t.bool(column)} NOT NULL DEFAULT ${dialect === "pg" ? String(fallback) : fallback ? 1 : 0}`
  // PostgreSQL needs the target table to exist; SQLite checks references only when rows change.
  const deferredReference = (target: string, onDelete: string) =>
    dialect === "sqlite" ? ` REFERENCES ${target} (id) ON DELETE ${onDelete}` : ""
  return [
    `CREATE TABLE roles (
      id ${t.id} PRIMARY KEY,
      name ${t.text} NOT NULL UNIQUE,
      description ${t.text} NOT NULL DEFAULT '',
      permissions ${t.json} NOT NULL DEFAULT '[]',
      ${bool("builtin", false)},
      ${created},
      ${updated}
    )`,
    `CREATE TABLE users (
      id ${t.id} PRIMARY KEY,
      email ${t.text} NOT NULL UNIQUE CHECK (email = lower(email)),
      username ${t.text} NOT NULL,
      password_hash ${t.text},
      role_id ${t.id} NOT NULL REFERENCES roles (id) ON DELETE RESTRICT,
      ${bool("disabled", false)},
      terms_accepted_at ${t.timestamp} NOT NULL,
      ${bool("marketing_consent", false)},
      marketing_consent_at ${t.timestamp},
      last_login_at ${t.timestamp},
      failed_login_count integer NOT NULL DEFAULT 0 CHECK (failed_login_count >= 0),
      deleted_at ${t.timestamp},
      ${created},
      ${updated}
    )`,
    `CREATE UNIQUE INDEX users_username_key ON users (lower(username))`,
    `CREATE INDEX users_role_idx ON users (role_id)`,
    `CREATE INDEX users_created_idx ON users (created_at, id)`,
    `CREATE TABLE sessions (
      id ${t.id} PRIMARY KEY,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      family_id ${t.id} NOT NULL,
      token_hash ${t.text} NOT NULL UNIQUE,
      expires_at ${t.timestamp} NOT NULL,
      rotated_at ${t.timestamp},
      revoked_at ${t.timestamp},
      revoked_reason ${t.text},
      ip_address ${t.text},
      user_agent ${t.text},
      ${created},
      last_used_at ${t.timestamp}
    )`,
    `CREATE INDEX sessions_user_idx ON sessions (user_id, created_at)`,
    `CREATE INDEX sessions_family_idx ON sessions (family_id)`,
    `CREATE INDEX sessions_expires_idx ON sessions (expires_at)`,
    `CREATE TABLE api_keys (
      id ${t.id} PRIMARY KEY,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      name ${t.text} NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
      prefix ${t.text} NOT NULL UNIQUE,
      key_hash ${t.text} NOT NULL UNIQUE,
      scopes ${t.json} NOT NULL DEFAULT '[]',
      expires_at ${t.timestamp},
      last_used_at ${t.timestamp},
      revoked_at ${t.timestamp},
      ${created}
    )`,
    `CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at)`,
    `CREATE TABLE audit_events (
      id ${t.id} PRIMARY KEY,
      actor_type ${t.text} NOT NULL ${oneOf("actor_type", ["user", "api_key", "system", "anonymous"])},
      actor_id ${t.text},
      action ${t.text} NOT NULL,
      target_type ${t.text},
      target_id ${t.text},
      ip_address ${t.text},
      user_agent ${t.text},
      metadata ${t.json} NOT NULL DEFAULT '{}',
      ${created}
    )`,
    `CREATE INDEX audit_events_created_idx ON audit_events (created_at, id)`,
    `CREATE INDEX audit_events_actor_idx ON audit_events (actor_id, created_at)`,
    `CREATE INDEX audit_events_action_idx ON audit_events (action, created_at)`,
    `CREATE INDEX audit_events_target_idx ON audit_events (target_type, target_id)`,
    `CREATE TABLE providers (
      id ${t.id} PRIMARY KEY,
      name ${t.text} NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 100),
      kind ${t.text} NOT NULL ${oneOf("kind", ["ollama", "openai-compatible", "openai", "anthropic"])},
      base_url ${t.text} NOT NULL,
      credential_ciphertext ${t.text},
      credential_key_id ${t.text},
      credential_last4 ${t.text},
      ${bool("enabled", true)},
      source ${t.text} NOT NULL DEFAULT 'admin' ${oneOf("source", ["admin", "environment"])},
      connect_timeout_ms integer NOT NULL DEFAULT 10000 CHECK (connect_timeout_ms > 0),
      request_timeout_ms integer NOT NULL DEFAULT 600000 CHECK (request_timeout_ms > 0),
      ${created},
      ${updated},
      CHECK ((credential_ciphertext IS NULL) = (credential_key_id IS NULL))
    )`,
    `CREATE TABLE llm_models (
      id ${t.id} PRIMARY KEY,
      provider_id ${t.id} NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
      provider_model ${t.text} NOT NULL,
      display_name ${t.text} NOT NULL,
      status ${t.text} NOT NULL DEFAULT 'available' ${
      oneOf("status", ["available", "loading", "running", "stopped", "error"])
    },
      status_message ${t.text},
      ${bool("is_local", false)},
      ${bool("enabled", true)},
      context_window integer CHECK (context_window > 0),
      capabilities ${t.json} NOT NULL DEFAULT '[]',
      metadata ${t.json} NOT NULL DEFAULT '{}',
      last_synced_at ${t.timestamp},
      ${created},
      ${updated},
      UNIQUE (provider_id, provider_model)
    )`,
    `CREATE INDEX llm_models_status_idx ON llm_models (status)`,
    `CREATE TABLE model_configs (
      id ${t.id} PRIMARY KEY,
      owner_id ${t.id} REFERENCES users (id) ON DELETE CASCADE,
      name ${t.text} NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
      model_id ${t.id} REFERENCES llm_models (id) ON DELETE SET NULL,
      system_prompt ${t.text},
      temperature ${t.real} CHECK (temperature BETWEEN 0 AND 2),
      top_p ${t.real} CHECK (top_p BETWEEN 0 AND 1),
      max_tokens integer CHECK (max_tokens > 0),
      stop ${t.json} NOT NULL DEFAULT '[]',
      extra_params ${t.json} NOT NULL DEFAULT '{}',
      ${created},
      ${updated}
    )`,
    `CREATE UNIQUE INDEX model_configs_global_name_key ON model_configs (name) WHERE owner_id IS NULL`,
    `CREATE UNIQUE INDEX model_configs_owner_name_key ON model_configs (owner_id, name) WHERE owner_id IS NOT NULL`,
    `CREATE TABLE conversations (
      id ${t.id} PRIMARY KEY,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      title ${t.text} NOT NULL DEFAULT '' CHECK (length(title) <= 500),
      model_id ${t.id} REFERENCES llm_models (id) ON DELETE SET NULL,
      model_config_id ${t.id} REFERENCES model_configs (id) ON DELETE SET NULL,
      current_leaf_id ${t.id}${deferredReference("messages", "SET NULL")},
      ${bool("pinned", false)},
      ${bool("archived", false)},
      deleted_at ${t.timestamp},
      ${created},
      ${updated}
    )`,
    // The list: a user's live conversations, pinned first, newest-updated first.
    `CREATE INDEX conversations_user_list_idx ON conversations (user_id, archived, pinned, updated_at, id)
      WHERE deleted_at IS NULL`,
    `CREATE INDEX conversations_user_trash_idx ON conversations (user_id, deleted_at)
      WHERE deleted_at IS NOT NULL`,
    `CREATE TABLE messages (
      id ${t.id} PRIMARY KEY,
      conversation_id ${t.id} NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
      parent_id ${t.id} REFERENCES messages (id) ON DELETE CASCADE,
      thread_id ${t.id}${deferredReference("threads", "CASCADE")},
      role ${t.text} NOT NULL ${oneOf("role", ["system", "user", "assistant", "tool"])},
      content ${t.text} NOT NULL DEFAULT '',
      status ${t.text} NOT NULL DEFAULT 'complete' ${
      oneOf("status", ["streaming", "complete", "incomplete", "cancelled", "error"])
    },
      model_id ${t.id} REFERENCES llm_models (id) ON DELETE SET NULL,
      model_name ${t.text},
      prompt_tokens integer CHECK (prompt_tokens >= 0),
      completion_tokens integer CHECK (completion_tokens >= 0),
      tool_calls ${t.json} NOT NULL DEFAULT '[]',
      metadata ${t.json} NOT NULL DEFAULT '{}',
      edited_from_id ${t.id} REFERENCES messages (id) ON DELETE SET NULL,
      deleted_at ${t.timestamp},
      ${created},
      ${updated},
      CHECK (parent_id IS NULL OR parent_id <> id)
    )`,
    `CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at, id)`,
    `CREATE INDEX messages_parent_idx ON messages (parent_id, created_at)`,
    `CREATE INDEX messages_thread_idx ON messages (thread_id, created_at, id) WHERE thread_id IS NOT NULL`,
    // Start-up recovery looks for answers a crash left streaming.
    `CREATE INDEX messages_streaming_idx ON messages (status) WHERE status = 'streaming'`,
    `CREATE TABLE threads (
      id ${t.id} PRIMARY KEY,
      conversation_id ${t.id} NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
      anchor_message_id ${t.id} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      title ${t.text} NOT NULL DEFAULT '' CHECK (length(title) <= 500),
      ${created},
      ${updated}
    )`,
    `CREATE INDEX threads_conversation_idx ON threads (conversation_id, created_at, id)`,
    `CREATE INDEX threads_anchor_idx ON threads (anchor_message_id)`,
    `CREATE TABLE files (
      id ${t.id} PRIMARY KEY,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      original_name ${t.text} NOT NULL CHECK (length(original_name) BETWEEN 1 AND 255),
      content_type ${t.text} NOT NULL,
      size_bytes ${t.bigint} NOT NULL CHECK (size_bytes >= 0),
      sha256 ${t.text} NOT NULL CHECK (length(sha256) = 64),
      storage_key ${t.text} NOT NULL UNIQUE,
      deleted_at ${t.timestamp},
      ${created}
    )`,
    `CREATE INDEX files_user_idx ON files (user_id, created_at, id)`,
    `CREATE INDEX files_user_sha_idx ON files (user_id, sha256)`,
    `CREATE TABLE message_files (
      message_id ${t.id} NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
      file_id ${t.id} NOT NULL REFERENCES files (id) ON DELETE CASCADE,
      ${created},
      PRIMARY KEY (message_id, file_id)
    )`,
    `CREATE INDEX message_files_file_idx ON message_files (file_id)`,
    `CREATE TABLE file_analyses (
      id ${t.id} PRIMARY KEY,
      file_id ${t.id} NOT NULL REFERENCES files (id) ON DELETE CASCADE,
      status ${t.text} NOT NULL DEFAULT 'pending' ${oneOf("status", ["pending", "processing", "complete", "error"])},
      extracted_text ${t.text},
      analysis ${t.json} NOT NULL DEFAULT '{}',
      error ${t.text},
      model_id ${t.id} REFERENCES llm_models (id) ON DELETE SET NULL,
      attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
      completed_at ${t.timestamp},
      ${created},
      ${updated}
    )`,
    `CREATE INDEX file_analyses_file_idx ON file_analyses (file_id, created_at)`,
    `CREATE INDEX file_analyses_status_idx ON file_analyses (status, created_at)`,
    ...(dialect === "pg" ?
      [
        `ALTER TABLE conversations ADD CONSTRAINT conversations_current_leaf_fkey
          FOREIGN KEY (current_leaf_id) REFERENCES messages (id) ON DELETE SET NULL`,
        `ALTER TABLE messages ADD CONSTRAINT messages_thread_fkey
          FOREIGN KEY (thread_id) REFERENCES threads (id) ON DELETE CASCADE`
      ] :
      [])
  ]
}

const userPermissions = [
  "models:read",
  "models:use",
  "conversations:read",
  "conversations:write",
  "files:read",
  "files:write",
  "chat",
  "keys:manage"
]

const adminPermissions = [
  ...userPermissions,
  "admin:users",
  "admin:roles",
  "admin:audit",
  "admin:providers",
  "admin:models",
  "admin:model-configs"
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const dialect = sql.onDialectOrElse({ pg: () => "pg" as const, orElse: () => "sqlite" as const })
  for (const statement of statements(types[dialect], dialect)) {
    yield* sql.unsafe(statement)
  }
  const roles = [
    { name: "admin", description: "Manages users, providers and models", permissions: adminPermissions },
    { name: "user", description: "Uses models and owns conversations, files and keys", permissions: userPermissions }
  ]
  for (const role of roles) {
    const id = yield* generateUuid
    yield* sql`INSERT INTO roles ${
      sql.insert({
        id,
        name: role.name,
        description: role.description,
        permissions: JSON.stringify(role.permissions),
        builtin: 1
      })
    }`
  }
})

/**
 * The knowledge graph: what a model found in a user's conversations and files.
 *
 * - `graph_extractions`: one request to read a source (a conversation's active branch, or a file)
 *   for entities and relationships, run as a background job, with its status.
 * - `graph_entities`: typed entities, one per user, type and name (compared case-blind, through
 *   `normalized_name`), with the highest confidence any source gave them.
 * - `graph_mentions`: where each entity was found (the source and that extraction's confidence).
 * - `graph_relationships`: typed edges between two entities of the same user, with a confidence
 *   and the source they were last found in.
 *
 * Everything is the user's own and goes with them (ON DELETE CASCADE); an entity takes its
 * mentions and edges with it.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly timestamp: string
  readonly now: string
  readonly real: string
}

const sourceKind = (column: string) => `${column} text NOT NULL CHECK (${column} IN ('conversation', 'file'))`
const confidence = `confidence {real} NOT NULL CHECK (confidence >= 0 AND confidence <= 1)`

const statements = (t: Types) => {
  const created = `created_at ${t.timestamp} NOT NULL DEFAULT ${t.now}`
  const updated = `updated_at ${t.timestamp} NOT NULL DEFAULT ${t.now}`
  const score = confidence.replace("{real}", t.real)
  return [
    `CREATE TABLE graph_extractions (
      id ${t.id} PRIMARY KEY,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      ${sourceKind("source_kind")},
      source_id ${t.id} NOT NULL,
      model_id ${t.id} REFERENCES llm_models (id) ON DELETE SET NULL,
      status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'complete', 'error')),
      entity_count integer NOT NULL DEFAULT 0 CHECK (entity_count >= 0),
      relationship_count integer NOT NULL DEFAULT 0 CHECK (relationship_count >= 0),
      error text,
      attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
      completed_at ${t.timestamp},
      ${created},
      ${updated}
    )`,
    `CREATE INDEX graph_extractions_user_idx ON graph_extractions (user_id, created_at, id)`,
    `CREATE TABLE graph_entities (
      id ${t.id} PRIMARY KEY,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
      normalized_name text NOT NULL,
      type text NOT NULL CHECK (length(type) BETWEEN 1 AND 50),
      description text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
      ${score},
      mention_count integer NOT NULL DEFAULT 0 CHECK (mention_count >= 0),
      ${created},
      ${updated},
      UNIQUE (user_id, type, normalized_name)
    )`,
    `CREATE INDEX graph_entities_name_idx ON graph_entities (user_id, normalized_name, id)`,
    `CREATE TABLE graph_mentions (
      entity_id ${t.id} NOT NULL REFERENCES graph_entities (id) ON DELETE CASCADE,
      ${sourceKind("source_kind")},
      source_id ${t.id} NOT NULL,
      ${score},
      ${created},
      PRIMARY KEY (entity_id, source_kind, source_id)
    )`,
    `CREATE INDEX graph_mentions_source_idx ON graph_mentions (source_kind, source_id)`,
    `CREATE TABLE graph_relationships (
      id ${t.id} PRIMARY KEY,
      user_id ${t.id} NOT NULL REFERENCES users (id) ON DELETE CASCADE,
      source_entity_id ${t.id} NOT NULL REFERENCES graph_entities (id) ON DELETE CASCADE,
      target_entity_id ${t.id} NOT NULL REFERENCES graph_entities (id) ON DELETE CASCADE,
      type text NOT NULL CHECK (length(type) BETWEEN 1 AND 50),
      ${score},
      ${sourceKind("source_kind")},
      source_id ${t.id} NOT NULL,
      ${created},
      ${updated},
      UNIQUE (source_entity_id, target_entity_id, type)
    )`,
    `CREATE INDEX graph_relationships_target_idx ON graph_relationships (target_entity_id)`,
    `CREATE INDEX graph_relationships_user_idx ON graph_relationships (user_id)`
  ]
}

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const types = sql.onDialectOrElse({
    pg: (): Types => ({ id: "uuid", timestamp: "timestamptz", now: "now()", real: "double precision" }),
    orElse: (): Types => ({
      id: "text",
      timestamp: "text",
      now: "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
      real: "real"
    })
  })
  for (const statement of statements(types)) {
    yield* sql.unsafe(statement)
  }
})

/**
 * A relationship of the knowledge graph remembers every source it was found in, as an entity does
 * (`graph_mentions`): `graph_relationship_sources`, one row per relationship and source with that
 * extraction's confidence. Before, a relationship kept only the source it was last found in, so
 * reading that source again without it removed the relationship though another source still had
 * it. The relationship's own `source_kind`/`source_id` stay: the source it was last found in.
 *
 * Each existing relationship starts with the one source it has.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly timestamp: string
  readonly real: string
}

const statements = (t: Types) => [
  `CREATE TABLE graph_relationship_sources (
    relationship_id ${t.id} NOT NULL REFERENCES graph_relationships (id) ON DELETE CASCADE,
    source_kind text NOT NULL CHECK (source_kind IN ('conversation', 'file')),
    source_id ${t.id} NOT NULL,
    confidence ${t.real} NOT NULL CHECK (confidence >= 0 AND confidence <= 1),
    created_at ${t.timestamp} NOT NULL,
    PRIMARY KEY (relationship_id, source_kind, source_id)
  )`,
  `CREATE INDEX graph_relationship_sources_source_idx ON graph_relationship_sources (source_kind, source_id)`,
  `INSERT INTO graph_relationship_sources (relationship_id, source_kind, source_id, confidence, created_at)
    SELECT id, source_kind, source_id, confidence, updated_at FROM graph_relationships`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const types = sql.onDialectOrElse({
    pg: (): Types => ({ id: "uuid", timestamp: "timestamptz", real: "double precision" }),
    orElse: (): Types => ({ id: "text", timestamp: "text", real: "real" })
  })
  for (const statement of statements(types)) {
    yield* sql.unsafe(statement)
  }
})

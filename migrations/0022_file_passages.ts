/**
 * Retrieval of attached files' passages (`EMBEDDING_MODEL`, `Files/Passages.ts`).
 *
 * - `file_passages`: a file's text split into passages (`position` from 0, `start_offset` and
 *   `end_offset` its characters in the text), each with its vector: `dimensions` float32 values,
 *   little-endian, of length 1, as bytes (BLOB, bytea), made by `model_id`. They go with their file
 *   and with their model.
 * - `file_passage_sets`: whether a file's passages were made, by which model, how many, or why they
 *   could not be (`failed`, with `error`): what the file's view shows.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"

interface Types {
  readonly id: string
  readonly bytes: string
  readonly timestamp: string
}

const tables = (t: Types) => [
  `CREATE TABLE file_passages (
    file_id ${t.id} NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    position integer NOT NULL CHECK (position >= 0),
    text text NOT NULL,
    start_offset integer NOT NULL CHECK (start_offset >= 0),
    end_offset integer NOT NULL CHECK (end_offset >= start_offset),
    model_id ${t.id} NOT NULL REFERENCES llm_models (id) ON DELETE CASCADE,
    dimensions integer NOT NULL CHECK (dimensions > 0),
    vector ${t.bytes} NOT NULL CHECK (length(vector) = 4 * dimensions),
    PRIMARY KEY (file_id, position)
  )`,
  // Deleting a model removes its vectors: without this index that is a scan of the table.
  `CREATE INDEX file_passages_model_idx ON file_passages (model_id)`,
  `CREATE TABLE file_passage_sets (
    file_id ${t.id} PRIMARY KEY REFERENCES files (id) ON DELETE CASCADE,
    model_id ${t.id} REFERENCES llm_models (id) ON DELETE CASCADE,
    status text NOT NULL CHECK (status IN ('ready', 'failed')),
    passages integer NOT NULL CHECK (passages >= 0),
    error text,
    updated_at ${t.timestamp} NOT NULL
  )`,
  `CREATE INDEX file_passage_sets_model_idx ON file_passage_sets (model_id)`
]

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const statements = sql.onDialectOrElse({
    pg: () => tables({ id: "uuid", bytes: "bytea", timestamp: "timestamptz" }),
    orElse: () => tables({ id: "text", bytes: "blob", timestamp: "text" })
  })
  for (const statement of statements) {
    yield* sql.unsafe(statement)
  }
})

/**
 * The knowledge graph's vectors (`graph_entity_embeddings`): one per entity, made by one model from
 * the text whose hash it keeps. Vectors travel as bytes (float32, little-endian), never as JSON.
 * Every read is scoped to the user.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { type LlmModelId, UserId } from "../Domain/Ids.js"
import { bytesOf } from "../Models/Embedding.js"
import { storedNow } from "../Sql.js"
import { GraphEntityId } from "./Api.js"
import { EntityRow } from "./GraphRepo.js"

/** An entity's text as it is embedded, and what its vector was made from (if it has one). */
export const EmbeddingStateRow = Schema.Struct({
  id: GraphEntityId,
  name: Schema.String,
  type: Schema.String,
  description: Schema.String,
  modelId: Schema.NullOr(Schema.String),
  textHash: Schema.NullOr(Schema.String)
})
export type EmbeddingStateRow = typeof EmbeddingStateRow.Type

/** A stored vector: its entity and its float32 values' bytes. */
export interface StoredVector {
  readonly entityId: GraphEntityId
  readonly vector: Uint8Array
}

export class EmbeddingsRepo extends Effect.Service<EmbeddingsRepo>()("Graph/EmbeddingsRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    /** Every entity of the user with what its vector (if any) was made of: the embedding step picks the stale ones. */
    const states = (userId: UserId) =>
      Effect.flatMap(
        sql`SELECT e.id, e.name, e.type, e.description, v.model_id, v.text_hash
            FROM graph_entities e LEFT JOIN graph_entity_embeddings v ON v.entity_id = e.id
            WHERE e.user_id = ${userId} ORDER BY e.id`,
        Schema.decodeUnknown(Schema.Array(EmbeddingStateRow))
      )

    /**
     * Stores an entity's vector in place of the one it had, unless the entity is gone meanwhile
     * (deleted, or taken back with its source).
     */
    const store = (row: {
      readonly entityId: GraphEntityId
      readonly modelId: LlmModelId
      readonly vector: ReadonlyArray<number>
      readonly textHash: string
    }) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          sql`INSERT INTO graph_entity_embeddings (entity_id, model_id, dimensions, vector, text_hash, created_at)
            SELECT ${row.entityId}, ${row.modelId}, ${row.vector.length}, ${
            bytesOf(row.vector)
          }, ${row.textHash}, ${now}
            WHERE EXISTS (SELECT 1 FROM graph_entities WHERE id = ${row.entityId})
            ON CONFLICT (entity_id) DO UPDATE SET model_id = excluded.model_id, dimensions = excluded.dimensions,
              vector = excluded.vector, text_hash = excluded.text_hash, created_at = excluded.created_at`
      )

    /** The user's vectors made by `modelId` with `dimensions` values, in entity order, after `after`. */
    const vectorsPage = (
      userId: UserId,
      modelId: LlmModelId,
      dimensions: number,
      after: Option.Option<string>,
      limit: number
    ) =>
      sql<StoredVector>`SELECT v.entity_id, v.vector FROM graph_entity_embeddings v
          JOIN graph_entities e ON e.id = v.entity_id
          WHERE e.user_id = ${userId} AND v.model_id = ${modelId} AND v.dimensions = ${dimensions}
            AND ${Option.match(after, { onNone: () => sql`TRUE`, onSome: (id) => sql`v.entity_id > ${id}` })}
          ORDER BY v.entity_id LIMIT ${limit}`

    /**
     * The users with entities that `modelId` has not embedded (any model's vector counts when the
     * model is not known yet): whom a backfill is for.
     */
    const usersToEmbed = (modelId: Option.Option<LlmModelId>) =>
      Effect.map(
        sql<{ readonly userId: string; readonly entities: number | string; readonly lastUpdated: string }>`
          SELECT e.user_id, COUNT(*) AS entities, CAST(MAX(e.updated_at) AS TEXT) AS last_updated
            FROM graph_entities e
            LEFT JOIN graph_entity_embeddings v ON v.entity_id = e.id
            WHERE v.entity_id IS NULL ${
          Option.match(modelId, { onNone: () => sql``, onSome: (id) => sql`OR v.model_id <> ${id}` })
        } GROUP BY e.user_id ORDER BY e.user_id`,
        // What the user's entities to embed are: how many, and the last change of one.
        (rows) => rows.map((row) => ({ userId: UserId.make(row.userId), stamp: `${row.entities}|${row.lastUpdated}` }))
      )

    /** The user's entities among `ids`. */
    const entities = (userId: UserId, ids: ReadonlyArray<string>) =>
      ids.length === 0
        ? Effect.succeed([])
        : Effect.flatMap(
          sql`SELECT * FROM graph_entities WHERE user_id = ${userId} AND ${sql.in("id", ids)}`,
          Schema.decodeUnknown(Schema.Array(EntityRow))
        )

    return {
      entities: (userId: UserId, ids: ReadonlyArray<string>) => Effect.orDie(entities(userId, ids)),
      states: (userId: UserId) => Effect.orDie(states(userId)),
      store: (row: Parameters<typeof store>[0]) => Effect.orDie(Effect.asVoid(store(row))),
      vectorsPage: (...args: Parameters<typeof vectorsPage>) => Effect.orDie(vectorsPage(...args)),
      usersToEmbed: (modelId: Option.Option<LlmModelId>) => Effect.orDie(usersToEmbed(modelId))
    } as const
  })
}) {}

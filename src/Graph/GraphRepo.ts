/**
 * The knowledge graph's SQL. Every read is scoped to the user: another user's entity or extraction
 * is not found. Names are matched through `normalized_name` (see `normalizeName`).
 */
import { SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { CountColumn } from "../Domain/Fields.js"
import { generateUuid, LlmModelId, UserId } from "../Domain/Ids.js"
import { createdBefore, storedNow } from "../Sql.js"
import { GraphEntityId, GraphExtractionId, type SourceKind } from "./Api.js"

/** Names compare without case, width or spacing differences. */
export const normalizeName = (name: string) => name.normalize("NFKC").trim().replace(/\s+/g, " ").toLowerCase()

const Timestamp = Schema.Union(Schema.DateTimeUtc, Schema.DateTimeUtcFromDate)

export const ExtractionRow = Schema.Struct({
  id: GraphExtractionId,
  userId: UserId,
  sourceKind: Schema.Literal("conversation", "file"),
  sourceId: Schema.String,
  modelId: Schema.NullOr(LlmModelId),
  status: Schema.Literal("pending", "processing", "complete", "error"),
  entityCount: CountColumn,
  relationshipCount: CountColumn,
  error: Schema.NullOr(Schema.String),
  attempts: CountColumn,
  createdAt: Timestamp,
  completedAt: Schema.NullOr(Timestamp)
})
export type ExtractionRow = typeof ExtractionRow.Type

export const EntityRow = Schema.Struct({
  id: GraphEntityId,
  name: Schema.String,
  normalizedName: Schema.String,
  type: Schema.String,
  description: Schema.String,
  confidence: Schema.Number,
  mentionCount: CountColumn,
  createdAt: Timestamp,
  updatedAt: Timestamp
})
export type EntityRow = typeof EntityRow.Type

export const RelationshipRow = Schema.Struct({
  type: Schema.String,
  confidence: Schema.Number,
  sourceKind: Schema.Literal("conversation", "file"),
  sourceId: Schema.String,
  outgoing: Schema.Union(Schema.Boolean, Schema.Number).pipe(
    Schema.transform(Schema.Boolean, {
      strict: true,
      decode: (value) => value === true || value === 1,
      encode: (b) => b
    })
  ),
  otherId: GraphEntityId,
  otherName: Schema.String,
  otherType: Schema.String
})

export const MentionRow = Schema.Struct({
  sourceKind: Schema.Literal("conversation", "file"),
  sourceId: Schema.String,
  confidence: Schema.Number,
  createdAt: Timestamp
})

/** What one extraction found, ready to store. */
export interface Findings {
  readonly entities: ReadonlyArray<{
    readonly name: string
    readonly type: string
    readonly description: string
    readonly confidence: number
  }>
  readonly relationships: ReadonlyArray<{
    readonly source: { readonly name: string; readonly type: string }
    readonly target: { readonly name: string; readonly type: string }
    readonly type: string
    readonly confidence: number
  }>
}

export class GraphRepo extends Effect.Service<GraphRepo>()("Graph/GraphRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient

    const insertExtraction = (row: {
      readonly userId: UserId
      readonly sourceKind: SourceKind
      readonly sourceId: string
      readonly modelId: LlmModelId
    }) =>
      Effect.gen(function*() {
        const id = yield* generateUuid
        const now = yield* storedNow
        const rows = yield* sql`INSERT INTO graph_extractions ${
          sql.insert({ id, ...row, status: "pending", createdAt: now, updatedAt: now })
        } RETURNING *`
        return yield* Schema.decodeUnknown(ExtractionRow)(rows[0])
      })

    const findExtraction = SqlSchema.findOne({
      Request: Schema.Struct({ id: Schema.String, userId: UserId }),
      Result: ExtractionRow,
      execute: ({ id, userId }) => sql`SELECT * FROM graph_extractions WHERE id = ${id} AND user_id = ${userId}`
    })

    /** The user's extractions, newest first, after a page's end. */
    const extractionsPage = (
      userId: UserId,
      after: Option.Option<{ readonly at: string; readonly id: string }>,
      limit: number
    ) =>
      Effect.flatMap(
        sql`SELECT * FROM graph_extractions WHERE user_id = ${userId} AND ${createdBefore(sql, after)}
            ORDER BY created_at DESC, id DESC LIMIT ${limit}`,
        Schema.decodeUnknown(Schema.Array(ExtractionRow))
      )

    const extractionById = SqlSchema.findOne({
      Request: Schema.String,
      Result: ExtractionRow,
      execute: (id) => sql`SELECT * FROM graph_extractions WHERE id = ${id}`
    })

    const setExtraction = (id: string, change: Record<string, unknown>) =>
      Effect.flatMap(storedNow, (now) => {
        const ended = change["status"] === "complete" || change["status"] === "error"
        return sql`UPDATE graph_extractions SET ${
          sql.update({ ...change, updatedAt: now, ...(ended ? { completedAt: now } : {}) })
        } WHERE id = ${id}`
      })

    /**
     * Takes back what earlier extractions of a source contributed: its mentions and its part in
     * relationships. Answers the entities and relationships it touched, for `settle`.
     */
    const retract = (userId: UserId, kind: SourceKind, sourceId: string) =>
      Effect.gen(function*() {
        const entities = yield* sql<{ readonly entityId: string }>`
          DELETE FROM graph_mentions WHERE source_kind = ${kind} AND source_id = ${sourceId}
          AND entity_id IN (SELECT id FROM graph_entities WHERE user_id = ${userId})
          RETURNING entity_id`
        const relationships = yield* sql<{ readonly relationshipId: string }>`
          DELETE FROM graph_relationship_sources WHERE source_kind = ${kind} AND source_id = ${sourceId}
          AND relationship_id IN (SELECT id FROM graph_relationships WHERE user_id = ${userId})
          RETURNING relationship_id`
        return {
          entities: entities.map((row) => row.entityId),
          relationships: relationships.map((row) => row.relationshipId)
        }
      })

    /**
     * Brings the touched entities and relationships in line with their sources: an entity's count
     * of mentions; a relationship's confidence (the highest any source gave it) and the source it
     * was last found in. What no source has any more is removed.
     */
    const settle = (entities: ReadonlyArray<string>, relationships: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        if (relationships.length > 0) {
          const ids = [...new Set(relationships)]
          yield* sql`DELETE FROM graph_relationships WHERE ${sql.in("id", ids)} AND NOT EXISTS (
                       SELECT 1 FROM graph_relationship_sources s WHERE s.relationship_id = graph_relationships.id)`
          yield* sql`UPDATE graph_relationships SET
                       confidence = (SELECT max(s.confidence) FROM graph_relationship_sources s
                                     WHERE s.relationship_id = graph_relationships.id),
                       source_kind = (SELECT s.source_kind FROM graph_relationship_sources s
                                      WHERE s.relationship_id = graph_relationships.id
                                      ORDER BY s.created_at DESC, s.source_id DESC LIMIT 1),
                       source_id = (SELECT s.source_id FROM graph_relationship_sources s
                                    WHERE s.relationship_id = graph_relationships.id
                                    ORDER BY s.created_at DESC, s.source_id DESC LIMIT 1)
                     WHERE ${sql.in("id", ids)}`
        }
        if (entities.length > 0) {
          const ids = [...new Set(entities)]
          yield* sql`UPDATE graph_entities SET mention_count =
                       (SELECT count(*) FROM graph_mentions WHERE graph_mentions.entity_id = graph_entities.id)
                     WHERE ${sql.in("id", ids)}`
          yield* sql`DELETE FROM graph_entities WHERE ${sql.in("id", ids)} AND mention_count = 0`
        }
      })

    /**
     * Stores what an extraction of a source found, in place of what earlier extractions of the same
     * source found: its mentions and its part in relationships are replaced, entities merged by
     * user, type and name (keeping the highest confidence and the first description), relationships
     * by their ends and type (keeping every source that found them), and what no source has any more
     * removed. Run within a transaction.
     */
    const storeFindings = (userId: UserId, kind: SourceKind, sourceId: string, findings: Findings) =>
      Effect.gen(function*() {
        const now = yield* storedNow
        const before = yield* retract(userId, kind, sourceId)
        const ids = new Map<string, string>()
        const keyOf = (type: string, name: string) => `${type}\u0000${normalizeName(name)}`
        // One order for every extraction (concurrent ones on PostgreSQL lock rows in it: no deadlock).
        const entities = [...findings.entities].sort((a, b) => {
          const left = keyOf(a.type, a.name)
          const right = keyOf(b.type, b.name)
          return left < right ? -1 : left > right ? 1 : 0
        })
        for (const entity of entities) {
          const id = yield* generateUuid
          const rows = yield* sql<{ readonly id: string }>`
            INSERT INTO graph_entities ${
            sql.insert({
              id,
              userId,
              name: entity.name,
              normalizedName: normalizeName(entity.name),
              type: entity.type,
              description: entity.description,
              confidence: entity.confidence,
              mentionCount: 0,
              createdAt: now,
              updatedAt: now
            })
          }
            ON CONFLICT (user_id, type, normalized_name) DO UPDATE SET
              confidence = CASE WHEN excluded.confidence > graph_entities.confidence
                THEN excluded.confidence ELSE graph_entities.confidence END,
              description = CASE WHEN graph_entities.description = ''
                THEN excluded.description ELSE graph_entities.description END,
              updated_at = excluded.updated_at
            RETURNING id`
          const entityId = rows[0]!.id
          ids.set(keyOf(entity.type, entity.name), entityId)
          yield* sql`INSERT INTO graph_mentions ${
            sql.insert({ entityId, sourceKind: kind, sourceId, confidence: entity.confidence, createdAt: now })
          } ON CONFLICT (entity_id, source_kind, source_id) DO UPDATE SET confidence = excluded.confidence`
        }
        const found: Array<string> = []
        for (const relationship of findings.relationships) {
          const source = ids.get(keyOf(relationship.source.type, relationship.source.name))
          const target = ids.get(keyOf(relationship.target.type, relationship.target.name))
          if (source === undefined || target === undefined || source === target) continue
          const id = yield* generateUuid
          // Confidence and last source are set by `settle`, from all of the relationship's sources.
          const rows = yield* sql<{ readonly id: string }>`INSERT INTO graph_relationships ${
            sql.insert({
              id,
              userId,
              sourceEntityId: source,
              targetEntityId: target,
              type: relationship.type,
              confidence: relationship.confidence,
              sourceKind: kind,
              sourceId,
              createdAt: now,
              updatedAt: now
            })
          } ON CONFLICT (source_entity_id, target_entity_id, type) DO UPDATE SET updated_at = excluded.updated_at
            RETURNING id`
          const relationshipId = rows[0]!.id
          yield* sql`INSERT INTO graph_relationship_sources ${
            sql.insert({
              relationshipId,
              sourceKind: kind,
              sourceId,
              confidence: relationship.confidence,
              createdAt: now
            })
          } ON CONFLICT (relationship_id, source_kind, source_id) DO UPDATE SET
              confidence = CASE WHEN excluded.confidence > graph_relationship_sources.confidence
                THEN excluded.confidence ELSE graph_relationship_sources.confidence END`
          found.push(relationshipId)
        }
        yield* settle([...before.entities, ...ids.values()], [...before.relationships, ...found])
        return { entities: ids.size, relationships: new Set(found).size }
      })

    /**
     * Whether the source still exists (a file not deleted, a conversation not purged), holding it
     * until the transaction ends: on PostgreSQL a shared row lock, so a deletion waits for the
     * findings to be stored and then takes them back; SQLite serialises the two writers anyway.
     */
    const holdSource = (userId: UserId, kind: SourceKind, sourceId: string) =>
      Effect.map(
        kind === "file"
          ? sql`SELECT id FROM files WHERE id = ${sourceId} AND user_id = ${userId} AND deleted_at IS NULL
                ${sql.onDialectOrElse({ pg: () => sql`FOR SHARE`, orElse: () => sql`` })}`
          : sql`SELECT id FROM conversations WHERE id = ${sourceId} AND user_id = ${userId}
                ${sql.onDialectOrElse({ pg: () => sql`FOR SHARE`, orElse: () => sql`` })}`,
        (rows) => rows.length > 0
      )

    /**
     * Takes back everything a source contributed to the graph (the source is gone: a file deleted, a
     * conversation purged). Run within the transaction that removes the source.
     */
    const forgetSource = (userId: UserId, kind: SourceKind, sourceId: string) =>
      Effect.flatMap(retract(userId, kind, sourceId), (touched) => settle(touched.entities, touched.relationships))

    const search = (
      userId: UserId,
      query: {
        readonly q?: string | undefined
        readonly type?: string | undefined
        readonly minConfidence?: number | undefined
      },
      after: Option.Option<{ readonly name: string; readonly id: string }>,
      limit: number
    ) => {
      const pattern = query.q === undefined
        ? null
        : `%${normalizeName(query.q).replace(/[\\%_]/g, (character) => `\\${character}`)}%`
      return Effect.flatMap(
        sql`SELECT * FROM graph_entities WHERE user_id = ${userId}
            AND ${pattern === null ? sql`TRUE` : sql`normalized_name LIKE ${pattern} ESCAPE '\\'`}
            AND ${query.type === undefined ? sql`TRUE` : sql`type = ${query.type}`}
            AND ${query.minConfidence === undefined ? sql`TRUE` : sql`confidence >= ${query.minConfidence}`}
            AND ${
          Option.match(after, {
            onNone: () => sql`TRUE`,
            onSome: ({ id, name }) => sql`(normalized_name > ${name} OR (normalized_name = ${name} AND id > ${id}))`
          })
        }
            ORDER BY normalized_name, id LIMIT ${limit}`,
        Schema.decodeUnknown(Schema.Array(EntityRow))
      )
    }

    const findEntity = SqlSchema.findOne({
      Request: Schema.Struct({ id: Schema.String, userId: UserId }),
      Result: EntityRow,
      execute: ({ id, userId }) => sql`SELECT * FROM graph_entities WHERE id = ${id} AND user_id = ${userId}`
    })

    const relationshipsOf = SqlSchema.findAll({
      Request: Schema.String,
      Result: RelationshipRow,
      execute: (id) =>
        sql`SELECT * FROM (
              SELECT r.type AS type, r.confidence AS confidence, r.source_kind AS source_kind,
                     r.source_id AS source_id, 1 AS outgoing,
                     e.id AS other_id, e.name AS other_name, e.type AS other_type
              FROM graph_relationships r JOIN graph_entities e ON e.id = r.target_entity_id
              WHERE r.source_entity_id = ${id}
              UNION ALL
              SELECT r.type, r.confidence, r.source_kind, r.source_id, 0, e.id, e.name, e.type
              FROM graph_relationships r JOIN graph_entities e ON e.id = r.source_entity_id
              WHERE r.target_entity_id = ${id}
            ) edges ORDER BY confidence DESC, other_name`
    })

    const mentionsOf = SqlSchema.findAll({
      Request: Schema.String,
      Result: MentionRow,
      execute: (id) =>
        sql`SELECT source_kind, source_id, confidence, created_at FROM graph_mentions
            WHERE entity_id = ${id} ORDER BY created_at, source_id`
    })

    const deleteEntity = (id: string, userId: UserId) =>
      Effect.map(
        sql`DELETE FROM graph_entities WHERE id = ${id} AND user_id = ${userId} RETURNING id`,
        (rows) => rows.length > 0
      )

    return {
      insertExtraction: (row: Parameters<typeof insertExtraction>[0]) => Effect.orDie(insertExtraction(row)),
      findExtraction: (id: string, userId: UserId) => Effect.orDie(findExtraction({ id, userId })),
      extractionById: (id: string) => Effect.orDie(extractionById(id)),
      setExtraction: (id: string, change: Record<string, unknown>) => Effect.orDie(setExtraction(id, change)),
      storeFindings: (userId: UserId, kind: SourceKind, sourceId: string, findings: Findings) =>
        Effect.orDie(storeFindings(userId, kind, sourceId, findings)),
      forgetSource: (userId: UserId, kind: SourceKind, sourceId: string) =>
        Effect.orDie(forgetSource(userId, kind, sourceId)),
      holdSource: (userId: UserId, kind: SourceKind, sourceId: string) =>
        Effect.orDie(holdSource(userId, kind, sourceId)),
      search: (...args: Parameters<typeof search>) => Effect.orDie(search(...args)),
      extractionsPage: (...args: Parameters<typeof extractionsPage>) => Effect.orDie(extractionsPage(...args)),
      findEntity: (id: string, userId: UserId) => Effect.orDie(findEntity({ id, userId })),
      relationshipsOf: (id: string) => Effect.orDie(relationshipsOf(id)),
      mentionsOf: (id: string) => Effect.orDie(mentionsOf(id)),
      deleteEntity: (id: string, userId: UserId) => Effect.orDie(deleteEntity(id, userId))
    } as const
  })
}) {}

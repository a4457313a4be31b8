/**
 * Files' passages and their vectors (`file_passages`), and whether a file's passages were made
 * (`file_passage_sets`). Vectors travel as bytes (float32, little-endian), never as JSON. Reads for a
 * user go through a file the caller has already found as theirs.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { FileId, type LlmModelId, type UserId } from "../Domain/Ids.js"
import { bytesOf } from "../Models/Embedding.js"
import { inTransaction, storedNow } from "../Sql.js"

/** A passage as it is stored: its place in the text and its words. */
export interface Passage {
  readonly position: number
  readonly text: string
  readonly startOffset: number
  readonly endOffset: number
}

/** A stored passage with its vector's bytes. */
export interface StoredPassage extends Passage {
  readonly vector: Uint8Array
}

export const PassageSetRow = Schema.Struct({
  fileId: FileId,
  modelId: Schema.NullOr(Schema.String),
  status: Schema.Literal("ready", "failed"),
  passages: Schema.Number,
  error: Schema.NullOr(Schema.String),
  /** When the set last changed, as the database writes it: part of a job's id (`Files/Passages.ts`). */
  updatedAt: Schema.String
})
export type PassageSetRow = typeof PassageSetRow.Type

/** Rows to an insert: eight values each, well under SQLite's limit on a statement's parameters. */
const insertBatch = 200

export class PassagesRepo extends Effect.Service<PassagesRepo>()("Files/PassagesRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const transaction = inTransaction(sql)

    /** A file still there, as the embedding job reads it. */
    const fileToEmbed = (fileId: FileId) =>
      Effect.map(
        sql<{
          readonly userId: UserId
          readonly contentType: string
          readonly storageKey: string
          readonly contentKeyCiphertext: string | null
          readonly contentKeyId: string | null
        }>`
          SELECT user_id, content_type, storage_key, content_key_ciphertext, content_key_id
          FROM files WHERE id = ${fileId} AND deleted_at IS NULL`,
        (rows) => Option.fromNullable(rows[0])
      )

    /**
     * The file's passages in place of those it had, with their set marked ready; nothing when the
     * file is gone meanwhile.
     */
    const replace = (
      fileId: FileId,
      modelId: LlmModelId,
      passages: ReadonlyArray<Passage & { readonly vector: ReadonlyArray<number> }>
    ) =>
      transaction(Effect.gen(function*() {
        const now = yield* storedNow
        const exists = yield* sql`SELECT 1 FROM files WHERE id = ${fileId} AND deleted_at IS NULL`
        if (exists.length === 0) return
        yield* sql`DELETE FROM file_passages WHERE file_id = ${fileId}`
        for (let start = 0; start < passages.length; start += insertBatch) {
          const rows = passages.slice(start, start + insertBatch).map((passage) => ({
            fileId,
            position: passage.position,
            text: passage.text,
            startOffset: passage.startOffset,
            endOffset: passage.endOffset,
            modelId,
            dimensions: passage.vector.length,
            vector: bytesOf(passage.vector)
          }))
          yield* sql`INSERT INTO file_passages ${sql.insert(rows)}`
        }
        yield* sql`INSERT INTO file_passage_sets (file_id, model_id, status, passages, error, updated_at)
          VALUES (${fileId}, ${modelId}, 'ready', ${passages.length}, NULL, ${now})
          ON CONFLICT (file_id) DO UPDATE SET model_id = excluded.model_id, status = excluded.status,
            passages = excluded.passages, error = excluded.error, updated_at = excluded.updated_at`
      }))

    /** The file's passages could not be made (kept until a later job makes them). */
    const markFailed = (fileId: FileId, modelId: LlmModelId | null, error: string) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          sql`INSERT INTO file_passage_sets (file_id, model_id, status, passages, error, updated_at)
          SELECT ${fileId}, ${modelId}, 'failed', 0, ${error}, ${now}
          WHERE EXISTS (SELECT 1 FROM files WHERE id = ${fileId})
          ON CONFLICT (file_id) DO UPDATE SET status = 'failed', error = excluded.error,
            updated_at = excluded.updated_at
          WHERE file_passage_sets.status <> 'ready'`
      )

    /** What is known of the passages of `fileIds`. */
    const sets = (fileIds: ReadonlyArray<string>) =>
      fileIds.length === 0
        ? Effect.succeed([])
        : Effect.flatMap(
          sql`SELECT file_id, model_id, status, passages, error, CAST(updated_at AS TEXT) AS updated_at
              FROM file_passage_sets WHERE ${sql.in("file_id", fileIds)}`,
          Schema.decodeUnknown(Schema.Array(PassageSetRow))
        )

    /** The file's passages that `modelId` embedded with `dimensions` values, in their order. */
    const passagesOf = (fileId: FileId, modelId: LlmModelId, dimensions: number) =>
      sql<StoredPassage>`SELECT position, text, start_offset, end_offset, vector FROM file_passages
          WHERE file_id = ${fileId} AND model_id = ${modelId} AND dimensions = ${dimensions}
          ORDER BY position`

    /**
     * Files whose passages `modelId` has not made (any model's count when the model is not known
     * yet), with their types: whom a backfill is for.
     */
    const filesToEmbed = (modelId: Option.Option<LlmModelId>) =>
      Effect.flatMap(
        sql`SELECT f.id, f.content_type, s.file_id AS set_file_id, s.model_id, s.status, s.passages, s.error,
              CAST(s.updated_at AS TEXT) AS updated_at
            FROM files f
            LEFT JOIN file_passage_sets s ON s.file_id = f.id
            WHERE f.deleted_at IS NULL AND (s.file_id IS NULL OR s.status <> 'ready' ${
          Option.match(modelId, {
            onNone: () => sql``,
            onSome: (id) => sql`OR s.model_id IS NULL OR s.model_id <> ${id}`
          })
        }) ORDER BY f.id`,
        (rows) =>
          Effect.forEach(rows, (row) =>
            Effect.map(
              row.setFileId === null
                ? Effect.succeed(null)
                : Schema.decodeUnknown(PassageSetRow)({ ...row, fileId: row.setFileId }),
              (set) => ({ id: FileId.make(row.id as string), contentType: row.contentType as string, set })
            ))
      )

    return {
      fileToEmbed: (fileId: FileId) => Effect.orDie(fileToEmbed(fileId)),
      replace: (...args: Parameters<typeof replace>) => replace(...args),
      markFailed: (...args: Parameters<typeof markFailed>) => Effect.orDie(Effect.asVoid(markFailed(...args))),
      sets: (fileIds: ReadonlyArray<string>) => Effect.orDie(sets(fileIds)),
      passagesOf: (...args: Parameters<typeof passagesOf>) => Effect.orDie(passagesOf(...args)),
      filesToEmbed: (modelId: Option.Option<LlmModelId>) => Effect.orDie(filesToEmbed(modelId))
    } as const
  })
}) {}

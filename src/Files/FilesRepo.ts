/**
 * Files and their analyses. Every read of a file is scoped to its owner: another user's file is not
 * found.
 */
import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Option, Schema } from "effect"
import { FileAnalysis, StoredFile } from "../Domain/File.js"
import { FileAnalysisId, FileId, LlmModelId, UserId } from "../Domain/Ids.js"
import type { Sealed } from "../Models/CredentialCipher.js"
import { createdBefore, storedNow } from "../Sql.js"

/** Where a page of files (newest first) continues: before the last item's time and id. */
export interface FilePosition {
  readonly at: string
  readonly id: string
}

/** What an analysis job reads: the analysis, and the file it is about. */
export class AnalysisJobRow extends Schema.Class<AnalysisJobRow>("AnalysisJobRow")({
  fileId: FileId,
  status: FileAnalysis.fields.status,
  modelId: Schema.NullOr(LlmModelId),
  userId: UserId,
  originalName: Schema.String,
  contentType: Schema.String,
  storageKey: Schema.String,
  contentKeyCiphertext: Schema.NullOr(Schema.String),
  contentKeyId: Schema.NullOr(Schema.String)
}) {}

/** A content stored as it is (before encryption at rest, or with it off), as `encrypt-files` reads it. */
export class PlaintextContent extends Schema.Class<PlaintextContent>("PlaintextContent")({
  id: FileId,
  storageKey: Schema.String,
  sizeBytes: Schema.Number,
  sha256: Schema.String
}) {}

/** A content's sealed data key, as key rotation reads it (sealed for the storage key). */
export class SealedContentKey extends Schema.Class<SealedContentKey>("SealedContentKey")({
  id: FileId,
  storageKey: Schema.String,
  contentKeyCiphertext: Schema.String,
  contentKeyId: Schema.String
}) {}

export class FilesRepo extends Effect.Service<FilesRepo>()("Files/FilesRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const files = yield* Model.makeRepository(StoredFile, {
      tableName: "files",
      spanPrefix: "FilesRepo",
      idColumn: "id"
    })
    const analyses = yield* Model.makeRepository(FileAnalysis, {
      tableName: "file_analyses",
      spanPrefix: "FileAnalysesRepo",
      idColumn: "id"
    })

    const findOwn = SqlSchema.findOne({
      Request: Schema.Struct({ id: FileId, userId: UserId }),
      Result: StoredFile,
      execute: ({ id, userId }) =>
        sql`SELECT * FROM files WHERE id = ${id} AND user_id = ${userId} AND deleted_at IS NULL`
    })

    const page = SqlSchema.findAll({
      Request: Schema.Struct({
        userId: UserId,
        after: Schema.NullOr(Schema.Struct({ at: Schema.String, id: Schema.String })),
        limit: Schema.Int
      }),
      Result: StoredFile,
      execute: ({ after, limit, userId }) =>
        sql`SELECT * FROM files WHERE user_id = ${userId} AND deleted_at IS NULL
            AND ${createdBefore(sql, Option.fromNullable(after))}
            ORDER BY created_at DESC, id DESC LIMIT ${limit}`
    })

    const removeOwn = SqlSchema.findOne({
      Request: Schema.Struct({ id: FileId, userId: UserId }),
      Result: Schema.Struct({ storageKey: Schema.String }),
      execute: ({ id, userId }) =>
        sql`DELETE FROM files WHERE id = ${id} AND user_id = ${userId} AND deleted_at IS NULL RETURNING storage_key`
    })

    /** How many files a user keeps, and their bytes. */
    const usageOf = (userId: UserId) =>
      Effect.map(
        sql<{ readonly files: number | string; readonly bytes: number | string | null }>`
          SELECT count(*) AS files, sum(size_bytes) AS bytes FROM files
          WHERE user_id = ${userId} AND deleted_at IS NULL`,
        // PostgreSQL's count and sum are bigint and numeric, which the driver gives as text.
        (rows) => ({ files: Number(rows[0]?.files ?? 0), bytes: Number(rows[0]?.bytes ?? 0) })
      )

    const storageKeysOf = SqlSchema.findAll({
      Request: UserId,
      Result: Schema.Struct({ storageKey: Schema.String }),
      execute: (userId) => sql`SELECT storage_key FROM files WHERE user_id = ${userId}`
    })

    const attachedTo = SqlSchema.findAll({
      Request: Schema.Array(Schema.String),
      Result: Schema.Struct({ messageId: Schema.String, fileId: Schema.String }),
      execute: (messageIds) =>
        sql`SELECT message_id, file_id FROM message_files WHERE ${sql.in("message_id", messageIds)}`
    })

    const analysisOf = SqlSchema.findOne({
      Request: Schema.Struct({ id: FileAnalysisId, fileId: FileId }),
      Result: FileAnalysis,
      execute: ({ fileId, id }) => sql`SELECT * FROM file_analyses WHERE id = ${id} AND file_id = ${fileId}`
    })

    const analysesOf = SqlSchema.findAll({
      Request: FileId,
      Result: FileAnalysis,
      execute: (fileId) => sql`SELECT * FROM file_analyses WHERE file_id = ${fileId} ORDER BY created_at DESC, id DESC`
    })

    const jobRow = SqlSchema.findOne({
      Request: FileAnalysisId,
      Result: AnalysisJobRow,
      execute: (id) =>
        sql`SELECT a.file_id, a.status, a.model_id, f.user_id, f.original_name, f.content_type, f.storage_key,
              f.content_key_ciphertext, f.content_key_id
            FROM file_analyses a JOIN files f ON f.id = a.file_id
            WHERE a.id = ${id} AND f.deleted_at IS NULL`
    })

    /** Moves an analysis on; `attempts` counts the attempts started. */
    const setStatus = (
      id: FileAnalysisId,
      change: {
        readonly status: "pending" | "processing" | "complete" | "error"
        readonly attempts?: number
        readonly error?: string | null
        readonly extractedText?: string
        readonly analysis?: Record<string, unknown>
      }
    ) =>
      Effect.flatMap(storedNow, (now) => {
        const ended = change.status === "complete" || change.status === "error"
        return sql`UPDATE file_analyses SET ${
          sql.update({
            status: change.status,
            updatedAt: now,
            ...(change.attempts === undefined ? {} : { attempts: change.attempts }),
            ...(change.error === undefined ? {} : { error: change.error }),
            ...(change.extractedText === undefined ? {} : { extractedText: change.extractedText }),
            ...(change.analysis === undefined ? {} : { analysis: JSON.stringify(change.analysis) }),
            ...(ended ? { completedAt: now } : {})
          })
        } WHERE id = ${id}`
      })

    /** Up to `limit` contents stored as they are, after the file `after` (by id). */
    const plaintextContents = SqlSchema.findAll({
      Request: Schema.Struct({ after: Schema.NullOr(FileId), limit: Schema.Int }),
      Result: PlaintextContent,
      execute: ({ after, limit }) =>
        sql`SELECT id, storage_key, size_bytes, sha256 FROM files
            WHERE content_key_ciphertext IS NULL AND ${after === null ? sql`TRUE` : sql`id > ${after}`}
            ORDER BY id LIMIT ${limit}`
    })

    /**
     * Puts a content encrypted under `storageKey` in place of the plaintext one under `previousKey`;
     * whether the file was still there with that content (not deleted, not encrypted meanwhile).
     */
    const encryptedContent = (id: FileId, previousKey: string, storageKey: string, contentKey: Sealed) =>
      Effect.map(
        sql`UPDATE files SET storage_key = ${storageKey}, content_key_ciphertext = ${contentKey.ciphertext},
              content_key_id = ${contentKey.keyId}
            WHERE id = ${id} AND storage_key = ${previousKey} AND content_key_ciphertext IS NULL
            RETURNING id`,
        (rows) => rows.length > 0
      )

    /** Up to `limit` sealed data keys, of the files after `after` (by id). */
    const contentKeys = SqlSchema.findAll({
      Request: Schema.Struct({ after: Schema.NullOr(FileId), limit: Schema.Int }),
      Result: SealedContentKey,
      execute: ({ after, limit }) =>
        sql`SELECT id, storage_key, content_key_ciphertext, content_key_id FROM files
            WHERE content_key_id IS NOT NULL AND ${after === null ? sql`TRUE` : sql`id > ${after}`}
            ORDER BY id LIMIT ${limit}`
    })

    /** The keys of `ENCRYPTION_KEYS` the data keys are sealed under. */
    const contentKeyIds = SqlSchema.findAll({
      Request: Schema.Void,
      Result: Schema.Struct({ contentKeyId: Schema.String }),
      execute: () => sql`SELECT DISTINCT content_key_id FROM files WHERE content_key_id IS NOT NULL`
    })

    /** Seals a content's data key anew, only while the row still holds `previous`: whether it did. */
    const setContentKey = (id: FileId, previous: string, contentKey: Sealed) =>
      Effect.map(
        sql`UPDATE files SET content_key_ciphertext = ${contentKey.ciphertext}, content_key_id = ${contentKey.keyId}
            WHERE id = ${id} AND content_key_ciphertext = ${previous}
            RETURNING id`,
        (rows) => rows.length > 0
      )

    /** How many contents are encrypted. */
    const encryptedCount = Effect.map(
      sql<{ readonly encrypted: number | string }>`
        SELECT count(*) AS encrypted FROM files WHERE content_key_id IS NOT NULL`,
      (rows) => Number(rows[0]?.encrypted ?? 0)
    )

    return {
      insertFile: (file: typeof StoredFile.insert.Type) => Effect.orDie(files.insert(file)),
      usageOf: (userId: UserId) => Effect.orDie(usageOf(userId)),
      findOwn: (id: FileId, userId: UserId) => Effect.orDie(findOwn({ id, userId })),
      page: (userId: UserId, after: Option.Option<FilePosition>, limit: number) =>
        Effect.orDie(page({ userId, after: Option.getOrNull(after), limit })),
      removeOwn: (id: FileId, userId: UserId) =>
        Effect.orDie(Effect.map(removeOwn({ id, userId }), Option.map((row) => row.storageKey))),
      storageKeysOf: (userId: UserId) =>
        Effect.orDie(Effect.map(storageKeysOf(userId), (rows) => rows.map((row) => row.storageKey))),
      insertAnalysis: (analysis: typeof FileAnalysis.insert.Type) => Effect.orDie(analyses.insert(analysis)),
      /** The files recorded as attached to these messages. */
      attachedTo: (messageIds: ReadonlyArray<string>) => Effect.orDie(attachedTo(messageIds)),
      analysisOf: (id: FileAnalysisId, fileId: FileId) => Effect.orDie(analysisOf({ id, fileId })),
      analysesOf: (fileId: FileId) => Effect.orDie(analysesOf(fileId)),
      jobRow: (id: FileAnalysisId) => Effect.orDie(jobRow(id)),
      setStatus: (id: FileAnalysisId, change: Parameters<typeof setStatus>[1]) => Effect.orDie(setStatus(id, change)),
      plaintextContents: (after: FileId | null, limit: number) => Effect.orDie(plaintextContents({ after, limit })),
      encryptedContent: (id: FileId, previousKey: string, storageKey: string, contentKey: Sealed) =>
        Effect.orDie(encryptedContent(id, previousKey, storageKey, contentKey)),
      contentKeys: (after: FileId | null, limit: number) => Effect.orDie(contentKeys({ after, limit })),
      contentKeyIds: Effect.orDie(Effect.map(contentKeyIds(), (rows) => rows.map((row) => row.contentKeyId))),
      /** Seals a content's data key anew (the content is untouched), unless it changed since it was read. */
      setContentKey: (id: FileId, previous: string, contentKey: Sealed) =>
        Effect.orDie(setContentKey(id, previous, contentKey)),
      encryptedCount: Effect.orDie(encryptedCount)
    } as const
  })
}) {}

/**
 * `npm run cli -- encrypt-files`: the contents stored as they are (uploaded before encryption at
 * rest, or with `FILES_ENCRYPTION=off`) encrypted, one by one. Each is written again, encrypted,
 * under a new storage key and checked against its row (size and SHA-256 of the content); the row is
 * then moved onto it in a transaction, only while the file is still there with its old content, and
 * only then is the old content removed. A file deleted meanwhile keeps nothing: its new content is
 * removed. Only rows without a data key are read, so a second run changes nothing and an
 * interrupted one is taken up where it stopped (an interruption leaves at most one content no row
 * names). Safe while the server runs.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Either } from "effect"
import type { FileId } from "../Domain/Ids.js"
import { CredentialCipher } from "../Models/CredentialCipher.js"
import { inTransaction } from "../Sql.js"
import { FilesRepo, type PlaintextContent } from "./FilesRepo.js"
import { FileStorage } from "./Storage.js"

export interface EncryptionReport {
  readonly keyId: string
  /** Encrypted by this run. */
  readonly encrypted: number
  /** Encrypted before this run. */
  readonly alreadyEncrypted: number
  /** Deleted (or encrypted by another run) while this one wrote them: nothing kept. */
  readonly skipped: number
  /** Could not be read, or did not match their row: left as they were, and logged. */
  readonly failed: number
  /** Encrypted, but their plaintext could not be removed: logged with its storage key, to remove by hand. */
  readonly leftBehind: number
}

/** Rows read at a time. */
const batchSize = 100

export const encryptStoredContents: Effect.Effect<
  EncryptionReport,
  never,
  SqlClient.SqlClient | FilesRepo | FileStorage | CredentialCipher
> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const files = yield* FilesRepo
  const storage = yield* FileStorage
  const cipher = yield* CredentialCipher
  const alreadyEncrypted = yield* files.encryptedCount
  let encrypted = 0
  let skipped = 0
  let failed = 0
  let leftBehind = 0
  const removeQuietly = (storageKey: string) =>
    storage.remove(storageKey).pipe(
      Effect.catchAll((error) => Effect.logWarning("A content could not be removed; nothing names it", error))
    )
  // Past every row read, failed ones included: each row is tried once a run.
  let after: FileId | null = null
  while (true) {
    const batch: ReadonlyArray<PlaintextContent> = yield* files.plaintextContents(after, batchSize)
    if (batch.length === 0) break
    for (const row of batch) {
      after = row.id
      yield* Effect.gen(function*() {
        const written = yield* Effect.either(storage.writeEncrypted(row.storageKey))
        if (Either.isLeft(written)) {
          failed++
          return yield* Effect.logError("A file's content could not be read to be encrypted", written.left)
        }
        const { contentKey, sha256, sizeBytes, storageKey } = written.right
        if (contentKey === null || sizeBytes !== row.sizeBytes || sha256 !== row.sha256) {
          failed++
          yield* removeQuietly(storageKey)
          return yield* Effect.logError(
            "A file's stored content does not match its row (size or SHA-256): left as it is"
          )
        }
        const moved = yield* inTransaction(sql)(files.encryptedContent(row.id, row.storageKey, storageKey, contentKey))
        if (!moved) {
          skipped++
          return yield* removeQuietly(storageKey)
        }
        encrypted++
        // No row names the plaintext any more: a copy that stays is named in the log, and counted.
        yield* storage.remove(row.storageKey).pipe(
          Effect.catchAll((error) => {
            leftBehind++
            return Effect.logError(
              "A file's content was encrypted, but its plaintext could not be removed; remove it by hand",
              error
            ).pipe(Effect.annotateLogs({ plaintextStorageKey: row.storageKey }))
          })
        )
      }).pipe(Effect.annotateLogs({ fileId: row.id }))
    }
  }
  return { keyId: cipher.primaryKeyId, encrypted, alreadyEncrypted, skipped, failed, leftBehind }
}).pipe(Effect.withSpan("EncryptContents.encryptStoredContents"))

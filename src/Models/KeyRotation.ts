/**
 * Key rotation: every stored credential, and every file's data key (`Files/ContentCipher.ts`),
 * not sealed as `CredentialCipher` seals now (under another key than the first of
 * `ENCRYPTION_KEYS`, or in the format from before values were bound to their use) is opened and
 * sealed again under the first. Run by `npm run cli -- rotate-keys` after putting a new key first;
 * the old key can be removed afterwards.
 *
 * The credentials change in one transaction (all or nothing). The data keys, which may be many,
 * change in batches of `fileKeyBatch` rows by id, a transaction each, so the server's writes never
 * wait long behind it (SQLite: `SQLITE_BUSY_TIMEOUT`). Each row is sealed under one key or the
 * other at every moment, and both stay listed until the run ends: a run cut short leaves every file
 * readable, and the next run does what is left. Files' contents are not touched: only their data
 * keys, in their rows. Before anything changes, every key the rows name must be listed.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Either } from "effect"
import type { FileId } from "../Domain/Ids.js"
import { FilesRepo, type SealedContentKey } from "../Files/FilesRepo.js"
import { inTransaction } from "../Sql.js"
import { CredentialCipher, isLegacySealed, SealContext, type Sealed } from "./CredentialCipher.js"
import { ProvidersRepo } from "./ProvidersRepo.js"

export interface RotationReport {
  readonly keyId: string
  /** `upgraded`: of those sealed again, how many were in the format from before (counted in the first number too). */
  readonly credentials: { readonly reencrypted: number; readonly alreadyCurrent: number; readonly upgraded: number }
  readonly fileKeys: { readonly resealed: number; readonly alreadyCurrent: number; readonly upgraded: number }
}

/** Data keys read and sealed again per transaction, unless told otherwise. */
export const defaultFileKeyBatch = 500

export const rotateKeys = (
  options: { readonly fileKeyBatch?: number } = {}
): Effect.Effect<RotationReport, never, SqlClient.SqlClient | ProvidersRepo | FilesRepo | CredentialCipher> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const providers = yield* ProvidersRepo
    const files = yield* FilesRepo
    const cipher = yield* CredentialCipher
    const fileKeyBatch = options.fileKeyBatch ?? defaultFileKeyBatch

    // The data keys change batch by batch: a key missing would stop the run halfway, so it stops here.
    for (const keyId of yield* files.contentKeyIds) {
      if (!cipher.hasKey(keyId)) {
        return yield* Effect.dieMessage(`A file's data key is sealed under key "${keyId}", absent from ENCRYPTION_KEYS`)
      }
    }

    const credentials = yield* Effect.gen(function*() {
      let reencrypted = 0
      let alreadyCurrent = 0
      let upgraded = 0
      for (const provider of yield* providers.withCredential) {
        if (provider.credentialCiphertext === null || provider.credentialKeyId === null) continue
        const stored: Sealed = { ciphertext: provider.credentialCiphertext, keyId: provider.credentialKeyId }
        if (cipher.isCurrent(stored)) {
          alreadyCurrent++
          continue
        }
        const context = SealContext.providerCredential(provider.id)
        const credential = yield* cipher.tryOpen(stored.ciphertext, stored.keyId, context).pipe(
          Effect.orDieWith((unreadable) => new Error(`${unreadable.message} (provider "${provider.name}")`))
        )
        const sealed = cipher.seal(credential, context)
        // A credential an administrator changed since it was read (sealed under the first key) stays.
        if (!(yield* providers.setCredential(provider.id, stored.ciphertext, sealed.ciphertext, sealed.keyId))) continue
        reencrypted++
        if (isLegacySealed(stored.ciphertext)) upgraded++
      }
      return { reencrypted, alreadyCurrent, upgraded }
    }).pipe(inTransaction(sql))

    /** A row's data key sealed again, or a defect: a data key this server cannot open means lost keys or tampering. */
    const resealed = (row: SealedContentKey) => {
      const context = SealContext.fileDataKey(row.storageKey)
      return Either.match(cipher.openBytes(row.contentKeyCiphertext, row.contentKeyId, context), {
        onLeft: (problem) =>
          Effect.dieMessage(
            problem === "key-absent"
              ? `A file's data key is sealed under key "${row.contentKeyId}", absent from ENCRYPTION_KEYS (file ${row.id})`
              : `A file's data key sealed under key "${row.contentKeyId}" does not open (file ${row.id})`
          ),
        onRight: (dataKey) => Effect.succeed({ row, sealed: cipher.sealBytes(dataKey, context) })
      })
    }

    const fileKeys = { resealed: 0, alreadyCurrent: 0, upgraded: 0 }
    let after: FileId | null = null
    while (true) {
      // Read outside the batch's transaction, which then only writes: on SQLite, a transaction that
      // read before another process wrote could not write any more, without waiting.
      const batch: ReadonlyArray<SealedContentKey> = yield* files.contentKeys(after, fileKeyBatch)
      if (batch.length === 0) break
      after = batch[batch.length - 1]!.id
      const stale = batch.filter((row) =>
        !cipher.isCurrent({ ciphertext: row.contentKeyCiphertext, keyId: row.contentKeyId })
      )
      fileKeys.alreadyCurrent += batch.length - stale.length
      if (stale.length === 0) continue
      const changes = yield* Effect.forEach(stale, resealed)
      yield* Effect.forEach(
        changes,
        ({ row, sealed }) =>
          Effect.map(files.setContentKey(row.id, row.contentKeyCiphertext, sealed), (changed) => {
            // A row deleted (or sealed again by another run) since it was read is left as it is.
            if (!changed) return
            fileKeys.resealed++
            if (isLegacySealed(row.contentKeyCiphertext)) fileKeys.upgraded++
          })
      ).pipe(inTransaction(sql))
    }
    return { keyId: cipher.primaryKeyId, credentials, fileKeys }
  }).pipe(Effect.withSpan("KeyRotation.rotateKeys"))

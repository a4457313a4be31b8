/**
 * Key rotation: every stored credential, and every file's data key (`Files/ContentCipher.ts`),
 * sealed under another key than the first of `ENCRYPTION_KEYS` is opened and sealed again under
 * the first, in one transaction (all or nothing). Files' contents are not touched: only their data
 * keys, in their rows, are sealed anew. Run by `npm run cli -- rotate-keys` after putting a new key
 * first; the old key can be removed afterwards.
 */
import { SqlClient } from "@effect/sql"
import { Effect, Either } from "effect"
import { FilesRepo } from "../Files/FilesRepo.js"
import { inTransaction } from "../Sql.js"
import { CredentialCipher } from "./CredentialCipher.js"
import { ProvidersRepo } from "./ProvidersRepo.js"

export interface RotationReport {
  readonly keyId: string
  readonly credentials: { readonly reencrypted: number; readonly alreadyCurrent: number }
  readonly fileKeys: { readonly resealed: number; readonly alreadyCurrent: number }
}

/** Data keys read and sealed again at a time. */
const fileKeyBatch = 500

export const rotateKeys: Effect.Effect<
  RotationReport,
  never,
  SqlClient.SqlClient | ProvidersRepo | FilesRepo | CredentialCipher
> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const providers = yield* ProvidersRepo
  const files = yield* FilesRepo
  const cipher = yield* CredentialCipher
  return yield* Effect.gen(function*() {
    let reencrypted = 0
    let alreadyCurrent = 0
    for (const provider of yield* providers.withCredential) {
      if (provider.credentialCiphertext === null || provider.credentialKeyId === null) continue
      if (provider.credentialKeyId === cipher.primaryKeyId) {
        alreadyCurrent++
        continue
      }
      const credential = yield* cipher.open(provider.credentialCiphertext, provider.credentialKeyId)
      const sealed = cipher.seal(credential)
      yield* providers.setCredential(provider.id, sealed.ciphertext, sealed.keyId)
      reencrypted++
    }

    // Each batch's rows leave the set the next batch is read from.
    const before = yield* files.contentKeyCounts(cipher.primaryKeyId)
    let resealed = 0
    while (true) {
      const batch = yield* files.contentKeysNotUnder(cipher.primaryKeyId, fileKeyBatch)
      if (batch.length === 0) break
      for (const row of batch) {
        const dataKey = cipher.openBytes(row.contentKeyCiphertext, row.contentKeyId)
        if (Either.isLeft(dataKey)) {
          return yield* Effect.dieMessage(
            dataKey.left === "key-absent"
              ? `A file's data key is sealed under key "${row.contentKeyId}", absent from ENCRYPTION_KEYS`
              : `A file's data key sealed under key "${row.contentKeyId}" does not open`
          )
        }
        yield* files.setContentKey(row.id, cipher.sealBytes(dataKey.right))
        resealed++
      }
    }
    return {
      keyId: cipher.primaryKeyId,
      credentials: { reencrypted, alreadyCurrent },
      fileKeys: { resealed, alreadyCurrent: before.under }
    }
  }).pipe(inTransaction(sql))
}).pipe(Effect.withSpan("KeyRotation.rotateKeys"))

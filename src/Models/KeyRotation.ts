/**
 * Key rotation: every stored credential sealed under another key than the
 * first of `ENCRYPTION_KEYS` is opened and sealed again under the first, in
 * one transaction (all or nothing). Run by `npm run cli -- rotate-keys`
 * after putting a new key first; the old key can be removed afterwards.
 */
import { SqlClient } from "@effect/sql"
import { Effect } from "effect"
import { inTransaction } from "../Sql.js"
import { CredentialCipher } from "./CredentialCipher.js"
import { ProvidersRepo } from "./ProvidersRepo.js"

export interface RotationReport {
  readonly keyId: string
  readonly reencrypted: number
  readonly alreadyCurrent: number
}

export const rotateCredentials: Effect.Effect<
  RotationReport,
  never,
  SqlClient.SqlClient | ProvidersRepo | CredentialCipher
> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const providers = yield* ProvidersRepo
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
    return { keyId: cipher.primaryKeyId, reencrypted, alreadyCurrent }
  }).pipe(inTransaction(sql))
}).pipe(Effect.withSpan("KeyRotation.rotateCredentials"))

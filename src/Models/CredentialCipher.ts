/**
 * Provider credentials at rest: AES-256-GCM under the first key of
 * `ENCRYPTION_KEYS`, stored as base64 of iv (12 bytes) + tag (16 bytes) +
 * ciphertext, beside the id of the key that sealed it. Any listed key still
 * opens what it sealed, so keys can be rotated (`npm run cli -- rotate-keys`).
 * The key id is bound as additional data: a ciphertext moved under another
 * key id does not open.
 */
import { Effect, Redacted } from "effect"
import * as Crypto from "node:crypto"
import { Secrets } from "../Secrets.js"

export interface SealedCredential {
  readonly ciphertext: string
  readonly keyId: string
  /** What the API may show of it; nothing for a credential so short that four characters would give much away. */
  readonly last4: string | null
}

const minimumLengthToHint = 12

export class CredentialCipher extends Effect.Service<CredentialCipher>()("Models/CredentialCipher", {
  effect: Effect.gen(function*() {
    const { encryptionKeys } = yield* Secrets
    const [primary] = encryptionKeys
    if (primary === undefined) return yield* Effect.dieMessage("ENCRYPTION_KEYS holds no key")

    const seal = (credential: Redacted.Redacted<string>): SealedCredential => {
      const plaintext = Redacted.value(credential)
      const iv = Crypto.randomBytes(12)
      const cipher = Crypto.createCipheriv("aes-256-gcm", Redacted.value(primary.key), iv)
      cipher.setAAD(Buffer.from(primary.id))
      const encrypted = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()])
      return {
        ciphertext: Buffer.concat([iv, cipher.getAuthTag(), encrypted]).toString("base64"),
        keyId: primary.id,
        last4: plaintext.length >= minimumLengthToHint ? plaintext.slice(-4) : null
      }
    }

    /** The credential, or a defect: a ciphertext this server cannot open means lost or wrong keys. */
    const open = (ciphertext: string, keyId: string): Effect.Effect<Redacted.Redacted<string>> =>
      Effect.suspend(() => {
        const key = encryptionKeys.find((candidate) => candidate.id === keyId)
        if (key === undefined) {
          return Effect.dieMessage(`A stored credential is sealed under key "${keyId}", absent from ENCRYPTION_KEYS`)
        }
        return Effect.try(() => {
          const bytes = Buffer.from(ciphertext, "base64")
          const decipher = Crypto.createDecipheriv("aes-256-gcm", Redacted.value(key.key), bytes.subarray(0, 12))
          decipher.setAAD(Buffer.from(keyId))
          decipher.setAuthTag(bytes.subarray(12, 28))
          return Redacted.make(Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]).toString("utf8"))
        }).pipe(Effect.orDieWith(() => new Error(`A stored credential sealed under key "${keyId}" does not open`)))
      })

    return { seal, open, primaryKeyId: primary.id } as const
  })
}) {}

/**
 * Provider credentials at rest, and the server's other small secrets (single sign-on code
 * verifiers, files' data keys: `Files/ContentCipher.ts`): AES-256-GCM under the first key of
 * `ENCRYPTION_KEYS`, stored as base64 of iv (12 bytes) + tag (16 bytes) + ciphertext, beside the
 * id of the key that sealed it. Any listed key still opens what it sealed, so keys can be rotated
 * (`npm run cli -- rotate-keys`). The key id is bound as additional data: a ciphertext moved under
 * another key id does not open.
 */
import { Data, Effect, Either, Redacted } from "effect"
import * as Crypto from "node:crypto"
import { Secrets } from "../Secrets.js"

/** Bytes sealed: base64 of iv + tag + ciphertext, and the id of the key that sealed them. */
export interface Sealed {
  readonly ciphertext: string
  readonly keyId: string
}

/** Why something sealed cannot be opened: its key is not in `ENCRYPTION_KEYS`, or it does not open under it. */
export type SealedUnreadable = "key-absent" | "does-not-open"

export interface SealedCredential extends Sealed {
  /** What the API may show of it; nothing for a credential so short that four characters would give much away. */
  readonly last4: string | null
}

const minimumLengthToHint = 12

/** A sealed credential this server cannot open: its key is not in `ENCRYPTION_KEYS`, or it does not open under it. */
export class CredentialUnreadable extends Data.TaggedError("CredentialUnreadable")<{
  readonly keyId: string
  readonly problem: SealedUnreadable
}> {
  override get message() {
    return this.problem === "key-absent"
      ? `A stored credential is sealed under key "${this.keyId}", absent from ENCRYPTION_KEYS`
      : `A stored credential sealed under key "${this.keyId}" does not open`
  }
}

export class CredentialCipher extends Effect.Service<CredentialCipher>()("Models/CredentialCipher", {
  effect: Effect.gen(function*() {
    const { encryptionKeys } = yield* Secrets
    const [primary] = encryptionKeys
    if (primary === undefined) return yield* Effect.dieMessage("ENCRYPTION_KEYS holds no key")

    /** `plaintext` sealed under the first key. */
    const sealBytes = (plaintext: Uint8Array): Sealed => {
      const iv = Crypto.randomBytes(12)
      const cipher = Crypto.createCipheriv("aes-256-gcm", Redacted.value(primary.key), iv)
      cipher.setAAD(Buffer.from(primary.id))
      const encrypted = Buffer.concat([cipher.update(plaintext), cipher.final()])
      return { ciphertext: Buffer.concat([iv, cipher.getAuthTag(), encrypted]).toString("base64"), keyId: primary.id }
    }

    /** What `sealBytes` sealed under `keyId`, or why it cannot be opened. */
    const openBytes = (ciphertext: string, keyId: string): Either.Either<Buffer, SealedUnreadable> => {
      const key = encryptionKeys.find((candidate) => candidate.id === keyId)
      if (key === undefined) return Either.left("key-absent")
      try {
        const bytes = Buffer.from(ciphertext, "base64")
        const decipher = Crypto.createDecipheriv("aes-256-gcm", Redacted.value(key.key), bytes.subarray(0, 12))
        decipher.setAAD(Buffer.from(keyId))
        decipher.setAuthTag(bytes.subarray(12, 28))
        return Either.right(Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]))
      } catch {
        return Either.left("does-not-open")
      }
    }

    const seal = (credential: Redacted.Redacted<string>): SealedCredential => {
      const plaintext = Redacted.value(credential)
      return {
        ...sealBytes(Buffer.from(plaintext, "utf8")),
        last4: plaintext.length >= minimumLengthToHint ? plaintext.slice(-4) : null
      }
    }

    /** The credential, or why it cannot be opened (for what may outlive a key, such as a sign-in under way). */
    const tryOpen = (
      ciphertext: string,
      keyId: string
    ): Effect.Effect<Redacted.Redacted<string>, CredentialUnreadable> =>
      Effect.suspend(() =>
        Either.match(openBytes(ciphertext, keyId), {
          onLeft: (problem) => Effect.fail(new CredentialUnreadable({ keyId, problem })),
          onRight: (bytes) => Effect.succeed(Redacted.make(bytes.toString("utf8")))
        })
      )

    /** The credential, or a defect: a ciphertext this server cannot open means lost or wrong keys. */
    const open = (ciphertext: string, keyId: string): Effect.Effect<Redacted.Redacted<string>> =>
      tryOpen(ciphertext, keyId).pipe(Effect.orDieWith((unreadable) => new Error(unreadable.message)))

    return { seal, open, tryOpen, sealBytes, openBytes, primaryKeyId: primary.id } as const
  })
}) {}

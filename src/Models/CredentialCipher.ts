/**
 * Provider credentials at rest, and the server's other small secrets (single sign-on code
 * verifiers, files' data keys: `Files/ContentCipher.ts`): AES-256-GCM under the first key of
 * `ENCRYPTION_KEYS`, stored as `v2:` and the base64 of iv (12 bytes) + tag (16 bytes) +
 * ciphertext, beside the id of the key that sealed it. Any listed key still opens what it sealed, so
 * keys can be rotated (`npm run cli -- rotate-keys`).
 *
 * Bound as additional data: what the value is for and what it belongs to (a `SealContext`: a
 * provider's credential, a content's data key, a sign-in's code verifier), and the key id. A value
 * moved to another use, another row or under another key id does not open: someone who can write
 * the database cannot, say, have a file's data key sent to a provider as its API key.
 *
 * Values sealed before that (plain base64, no marker: `:` is not a base64 character) had the key id
 * alone as additional data; they still open that way, and `rotate-keys` seals them again in the
 * current format. Nothing upgrades them at start-up.
 */
import { Data, Effect, Either, Redacted } from "effect"
import * as Crypto from "node:crypto"
import type { ProviderId } from "../Domain/Ids.js"
import { Secrets } from "../Secrets.js"

/** Bytes sealed: the stored ciphertext (see the module's comment), and the id of the key that sealed them. */
export interface Sealed {
  readonly ciphertext: string
  readonly keyId: string
}

/** What a sealed value is for. */
export type SealPurpose = "provider-credential" | "file-data-key" | "sign-in-verifier"

/** What a value is sealed for and what it belongs to: built only by the constructors, one per use. */
export class SealContext {
  private constructor(readonly purpose: SealPurpose, readonly subject: string) {}

  /** A provider's credential, bound to the provider. */
  static providerCredential(providerId: ProviderId): SealContext {
    return new SealContext("provider-credential", providerId)
  }

  /** A file content's data key, bound to the storage key its content is under (the content binds it too). */
  static fileDataKey(storageKey: string): SealContext {
    return new SealContext("file-data-key", storageKey)
  }

  /** A single sign-on attempt's code verifier, bound to the attempt (the hash of its state). */
  static signInVerifier(stateHash: string): SealContext {
    return new SealContext("sign-in-verifier", stateHash)
  }
}

/** Starts every value sealed in the current format; a value without it was sealed before (`isLegacySealed`). */
const currentFormat = "v2:"

/** Whether a stored ciphertext was sealed before values were bound to their use (the key id alone bound). */
export const isLegacySealed = (ciphertext: string): boolean => !ciphertext.startsWith(currentFormat)

/** The additional data: unambiguous (JSON strings are escaped), so no two contexts share it. */
const additionalData = (context: SealContext, keyId: string) =>
  Buffer.from(JSON.stringify([currentFormat, context.purpose, context.subject, keyId]), "utf8")

/** Why something sealed cannot be opened: its key is not in `ENCRYPTION_KEYS`, or it does not open under it. */
export type SealedUnreadable = "key-absent" | "does-not-open"

export interface SealedCredential extends Sealed {
  /** What the API may show of it; nothing for a credential so short that four characters would give much away. */
  readonly last4: string | null
}

const minimumLengthToHint = 12

/**
 * A sealed credential this server cannot open: its key is not in `ENCRYPTION_KEYS`, or it does not
 * open under it (damaged, or moved from another use or another row).
 */
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

    /** `plaintext` sealed under the first key, for `context`. */
    const sealBytes = (plaintext: Uint8Array, context: SealContext): Sealed => {
      const iv = Crypto.randomBytes(12)
      const cipher = Crypto.createCipheriv("aes-256-gcm", Redacted.value(primary.key), iv)
      cipher.setAAD(additionalData(context, primary.id))
      const encrypted = Buffer.concat([cipher.update(plaintext), cipher.final()])
      const sealed = Buffer.concat([iv, cipher.getAuthTag(), encrypted]).toString("base64")
      return { ciphertext: currentFormat + sealed, keyId: primary.id }
    }

    /** What `sealBytes` sealed under `keyId` for `context` (or before, for anything), or why it cannot be opened. */
    const openBytes = (
      ciphertext: string,
      keyId: string,
      context: SealContext
    ): Either.Either<Buffer, SealedUnreadable> => {
      const key = encryptionKeys.find((candidate) => candidate.id === keyId)
      if (key === undefined) return Either.left("key-absent")
      const legacy = isLegacySealed(ciphertext)
      try {
        const bytes = Buffer.from(legacy ? ciphertext : ciphertext.slice(currentFormat.length), "base64")
        // A value cut short would otherwise be checked against a shorter tag, which GCM accepts.
        if (bytes.length < 28) return Either.left("does-not-open")
        const decipher = Crypto.createDecipheriv("aes-256-gcm", Redacted.value(key.key), bytes.subarray(0, 12), {
          authTagLength: 16
        })
        decipher.setAAD(legacy ? Buffer.from(keyId) : additionalData(context, keyId))
        decipher.setAuthTag(bytes.subarray(12, 28))
        return Either.right(Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]))
      } catch {
        return Either.left("does-not-open")
      }
    }

    const seal = (credential: Redacted.Redacted<string>, context: SealContext): SealedCredential => {
      const plaintext = Redacted.value(credential)
      return {
        ...sealBytes(Buffer.from(plaintext, "utf8"), context),
        last4: plaintext.length >= minimumLengthToHint ? plaintext.slice(-4) : null
      }
    }

    /** The credential, or why it cannot be opened (for what may outlive a key, such as a sign-in under way). */
    const tryOpen = (
      ciphertext: string,
      keyId: string,
      context: SealContext
    ): Effect.Effect<Redacted.Redacted<string>, CredentialUnreadable> =>
      Effect.suspend(() =>
        Either.match(openBytes(ciphertext, keyId, context), {
          onLeft: (problem) => Effect.fail(new CredentialUnreadable({ keyId, problem })),
          onRight: (bytes) => Effect.succeed(Redacted.make(bytes.toString("utf8")))
        })
      )

    /** The credential, or a defect: a ciphertext this server cannot open means lost or wrong keys, or tampering. */
    const open = (ciphertext: string, keyId: string, context: SealContext): Effect.Effect<Redacted.Redacted<string>> =>
      tryOpen(ciphertext, keyId, context).pipe(Effect.orDieWith((unreadable) => new Error(unreadable.message)))

    /** Whether `keyId` is one of `ENCRYPTION_KEYS`. */
    const hasKey = (keyId: string): boolean => encryptionKeys.some((key) => key.id === keyId)

    /** Whether a sealed value is as `sealBytes` would seal it now: under the first key, in the current format. */
    const isCurrent = (sealed: Sealed): boolean => sealed.keyId === primary.id && !isLegacySealed(sealed.ciphertext)

    return { seal, open, tryOpen, sealBytes, openBytes, hasKey, isCurrent, primaryKeyId: primary.id } as const
  })
}) {}
